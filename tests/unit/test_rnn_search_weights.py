"""``search_weights="node"``: DARTS' search cell, one matrix per node shared by the candidates.

The reference is the published DARTS cell step written out by hand (quark0/darts,
``rnn/model_search.py``, ``_cell``), independent of ``mdnas_fairseq.cells.rnn_steps``: for node
``j``, ``[c_i, h_i] = s_i W_j`` (one product per input state, the same matrix for every candidate)
and ``s_j = LN(sum_i sum_k p_ik * (s_i + sigmoid(c_i) * (f_k(h_i) - s_i)))``, every (i, k) term
summed one by one.
"""

import pytest
import torch
import torch.nn.functional as F

from mdnas_fairseq.cells.rnn import DartsRNNCell, DartsRNNLanguageModel
from mdnas_fairseq.search import darts_rnn_space

ACT = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda v: v}
IN, H, B, T, P = 5, 6, 4, 4, 0.3


def darts_states(cell, x, h0, probs, mx, mh):
    """The DARTS cell over ``x`` (T, B, IN); ``probs`` (B, E, K) over all operations (``none``
    included: it adds nothing). ``cell.node_weights[n]``: node ``n``'s one (H, 2H) matrix, or, for
    the ``op`` layout, (K', H, 2H): operation ``k``'s own matrix (in ``space.operations``' order
    without ``none``)."""
    space = cell.space
    weighted = [op for op in space.operations if op != space.none_op]
    h, out = h0, []
    for t in range(x.shape[0]):
        c0, g0 = torch.cat([x[t] * mx, h * mh], -1).matmul(cell.w0).chunk(2, -1)
        states = [F.layer_norm(h + torch.sigmoid(c0) * (torch.tanh(g0) - h), (H,))]
        for n, j in enumerate(space.node_ids):
            total = torch.zeros_like(h)
            for i in range(j):
                w = cell.node_weights[n]
                c, hh = (states[i] * mh).matmul(w if w.dim() == 2 else w[0]).chunk(2, -1)
                c = torch.sigmoid(c)
                for k, op in enumerate(weighted):
                    if w.dim() == 3:  # op layout: each operation its own product
                        c, hh = (states[i] * mh).matmul(w[k]).chunk(2, -1)
                        c = torch.sigmoid(c)
                    p = probs[:, space.edge_index(i, j), space.op_index(op)].unsqueeze(1)
                    total = total + p * (states[i] + c * (ACT[op](hh) - states[i]))
            states.append(F.layer_norm(total, (H,)))
        h = torch.stack(states[1:]).mean(0)
        out.append(h)
    return torch.stack(out)


def node_cell(dtype=torch.float64, nodes=3, compile="off"):
    space = darts_rnn_space(nodes)
    torch.manual_seed(0)
    cell = DartsRNNCell(
        IN, H, space, dropout_x=P, dropout_h=P, compile=compile, search_weights="node"
    )
    return space, cell.to(dtype).train()


@pytest.mark.parametrize("per_sample", [False, True])
def test_node_layout_equals_hand_written_darts_cell_values_and_gradients(per_sample):
    space, cell = node_cell()
    x = torch.randn(T, B, IN, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(B, space.num_edges, space.num_ops, dtype=torch.float64, requires_grad=True)

    def probs():
        return torch.softmax(alpha if per_sample else alpha[0], -1)

    torch.manual_seed(7)  # the cell draws one (B, IN) then one (B, H) mask per sequence
    out = cell(x, h0, mixing_probs=probs())
    torch.manual_seed(7)
    mx = torch.empty(B, IN, dtype=torch.float64).bernoulli_(1 - P) / (1 - P)
    mh = torch.empty(B, H, dtype=torch.float64).bernoulli_(1 - P) / (1 - P)
    full = probs() if per_sample else probs().expand(B, -1, -1)
    ref = darts_states(cell, x, h0, full, mx, mh)
    assert (out - ref).abs().max() < 1e-6
    # gradients of a random projection w.r.t. the weights, the input, h0 and alpha
    params = list(cell.parameters()) + [x, h0, alpha]
    probe = torch.randn_like(out)
    g_out = torch.autograd.grad((out * probe).sum(), params)
    g_ref = torch.autograd.grad((ref * probe).sum(), params)
    for p, a, b in zip(params, g_out, g_ref):
        assert (a - b).abs().max() < 1e-6, tuple(p.shape)


def test_node_layout_evaluation_mode_and_fp32():
    space, cell = node_cell(torch.float32)
    cell.eval()
    x = torch.randn(T, B, IN)
    probs = torch.softmax(torch.randn(space.num_edges, space.num_ops), -1)
    ones = torch.ones(B, IN), torch.ones(B, H)
    ref = darts_states(cell, x, torch.zeros(B, H), probs.expand(B, -1, -1), *ones)
    assert (cell(x, mixing_probs=probs) - ref).abs().max() < 1e-6


def test_node_layout_holds_one_matrix_per_node_and_op_layout_one_per_candidate():
    space = darts_rnn_space(4)
    node = DartsRNNCell(H, H, space, search_weights="node")
    op = DartsRNNCell(H, H, space)  # the default: checkpoints saved before the option load as "op"
    assert [tuple(w.shape) for w in node.node_weights] == [(H, 2 * H)] * 4
    assert [tuple(w.shape) for w in op.node_weights] == [(4, H, 2 * H)] * 4
    assert op.search_weights == "op"
    with pytest.raises(ValueError, match="search_weights"):
        DartsRNNCell(H, H, space, search_weights="edge")


def test_derived_multimodel_is_the_same_whatever_the_search_layout():
    """The LM's parameter table (what the struct term and the multimodel's size use) is per (node,
    operation) module either way: the search layout changes the supernet, not the multimodel."""
    tables = [
        DartsRNNLanguageModel(50, 1, H, H, ["en", "de"], num_nodes=3, search_weights=w)
        .param_table()
        .op_params
        for w in ("op", "node")
    ]
    assert tables[0] == tables[1]


def test_node_layout_compiled_equals_eager():
    """torch.compile (inductor) of the node-layout search step: outputs and gradients (fp64)."""
    space, eager = node_cell(torch.float64, nodes=2)
    _, compiled = node_cell(torch.float64, nodes=2, compile="on")
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(T, B, IN, dtype=torch.float64)
    alpha = torch.randn(space.num_edges, space.num_ops, dtype=torch.float64, requires_grad=True)
    outs = []
    for cell in (eager, compiled):
        torch.manual_seed(3)
        out = cell(x, mixing_probs=torch.softmax(alpha, -1))
        outs.append((out, torch.autograd.grad(out.square().sum(), [alpha, *cell.parameters()])))
    assert compiled.steps.active and compiled.steps.failed is None
    assert (outs[0][0] - outs[1][0]).abs().max() < 1e-10
    for a, b in zip(outs[0][1], outs[1][1]):
        assert (a - b).abs().max() < 1e-10


def test_node_layout_weight_gradients_with_alpha_fixed():
    """The weight step (alpha needs no gradient, so the mixing weights' gradient is skipped)."""
    space, cell = node_cell()
    cell.eval()
    x = torch.randn(T, B, IN, dtype=torch.float64)
    probs = torch.softmax(torch.randn(space.num_edges, space.num_ops, dtype=torch.float64), -1)
    out = cell(x, mixing_probs=probs)
    ones = torch.ones(B, IN, dtype=torch.float64), torch.ones(B, H, dtype=torch.float64)
    ref = darts_states(
        cell, x, torch.zeros(B, H, dtype=torch.float64), probs.expand(B, -1, -1), *ones
    )
    params = list(cell.parameters())
    for a, b in zip(torch.autograd.grad(out.sum(), params), torch.autograd.grad(ref.sum(), params)):
        assert (a - b).abs().max() < 1e-10
