"""The DARTS recurrent cell: search mode against an explicit loop, derived mode against search mode."""

import torch
import torch.nn.functional as F

from mdnas_fairseq.cells.rnn import ACTIVATIONS, DartsRNNCell, DartsRNNLanguageModel
from mdnas_fairseq.search import darts_rnn_space, derive_genotype

torch.manual_seed(0)
H, B, T = 6, 4, 5


def reference_search_states(cell, x, weights):
    """Explicit loops over time, nodes, inputs and operations (weights (B, E, K))."""
    space = cell.space
    h = torch.zeros(B, H, dtype=x.dtype)
    out = []
    for t in range(T):
        c0, g0 = torch.cat([x[t], h], -1).matmul(cell.w0).chunk(2, -1)
        states = [F.layer_norm(h + torch.sigmoid(c0) * (torch.tanh(g0) - h), (H,))]
        for n, j in enumerate(space.node_ids):
            total = torch.zeros(B, H, dtype=x.dtype)
            for i in range(j):
                e = space.edge_index(i, j)
                for k, op in enumerate(cell.weighted_ops):
                    ch = states[i].matmul(cell.node_weights[n][k])
                    c, g = torch.sigmoid(ch[:, :H]), ch[:, H:]
                    value = states[i] + c * (ACTIVATIONS[op](g) - states[i])
                    total = total + weights[:, e, space.op_index(op)].unsqueeze(1) * value
            states.append(F.layer_norm(total, (H,)))
        h = torch.stack(states[1:]).mean(0)
        out.append(h)
    return torch.stack(out)


def test_search_cell_equals_explicit_loop_with_per_sample_weights():
    space = darts_rnn_space(3)
    cell = DartsRNNCell(H, H, space).double().eval()
    x = torch.randn(T, B, H, dtype=torch.float64)
    weights = torch.softmax(torch.randn(B, space.num_edges, space.num_ops, dtype=torch.float64), -1)
    assert torch.allclose(
        cell(x, mixing_probs=weights), reference_search_states(cell, x, weights), atol=1e-10
    )
    # one weight matrix for the whole batch = the same weights for every sample
    w = weights[0]
    assert torch.allclose(
        cell(x, mixing_probs=w), reference_search_states(cell, x, w.expand(B, -1, -1)), atol=1e-10
    )


def test_derived_cell_equals_search_cell_with_one_hot_weights():
    space = darts_rnn_space(4)
    search = DartsRNNCell(H, H, space).double().eval()
    genotype = derive_genotype(torch.randn(2, space.num_edges, space.num_ops), space, ["en", "de"])
    derived = DartsRNNCell(H, H, space, genotype).double().eval()
    with torch.no_grad():
        derived.w0.copy_(search.w0)
        for e in genotype.union_edges():
            n = space.node_ids.index(e.node)
            derived.op_weights[f"node{e.node}_{e.op}"].copy_(
                search.node_weights[n][search.weighted_ops.index(e.op)]
            )
    x = torch.randn(T, B, H, dtype=torch.float64)
    for d in ("en", "de"):
        one_hot = torch.zeros(space.num_edges, space.num_ops, dtype=torch.float64)
        for e in genotype.cells[d]:
            one_hot[space.edge_index(e.input, e.node), space.op_index(e.op)] = 1.0
        expected = search(x, mixing_probs=one_hot)
        assert torch.allclose(derived(x, cells=[d] * B), expected, atol=1e-10)


def test_derived_domain_only_touches_its_own_matrices():
    space = darts_rnn_space(4)
    genotype = derive_genotype(torch.randn(2, space.num_edges, space.num_ops), space, ["en", "de"])
    model = DartsRNNLanguageModel(50, 1, H, H, ["en", "de"], num_nodes=4, genotype=genotype)
    tokens = torch.randint(2, 50, (B, T))
    logits, _ = model(tokens, torch.zeros(B, dtype=torch.long))  # all English
    logits.sum().backward()
    mine = {f"node{e.node}_{e.op}" for e in genotype.cells["en"]}
    for name, p in model.cell.op_weights.items():
        touched = p.grad is not None and p.grad.abs().sum() > 0
        assert touched == (name in mine), name
    # the multimodel's size is the genotype's parameter count
    assert sum(p.numel() for p in model.parameters()) == model.genotype_param_count(genotype)
