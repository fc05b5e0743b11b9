"""The fused / compiled recurrent cell against an explicit-loop reference: outputs and gradients.

The reference below is written independently of ``mdnas_fairseq.cells.rnn_steps``: loops over time,
nodes, input states and operations, the first projection as ``[x_t * m_x, h * m_h] W_0``, one
matrix product per (input, operation), variational masks drawn as the cell always drew them (one
(B, I) mask for x, then one (B, H) mask for h, per sequence).
"""

import logging

import pytest
import torch
import torch.nn.functional as F

from mdnas_fairseq.cells.rnn import DartsRNNCell
from mdnas_fairseq.search import darts_rnn_space, derive_genotype

ACT = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda v: v}
IN, H, B, T, P = 5, 6, 4, 4, 0.3


def draw_masks(seed, dtype, p_x=P, p_h=P):
    torch.manual_seed(seed)
    mx = torch.empty(B, IN, dtype=dtype).bernoulli_(1 - p_x) / (1 - p_x)
    mh = torch.empty(B, H, dtype=dtype).bernoulli_(1 - p_h) / (1 - p_h)
    return mx, mh


def highway(s, mat, op, mh):
    ch = (s * mh).matmul(mat)
    return s + torch.sigmoid(ch[:, :H]) * (ACT[op](ch[:, H:]) - s)


def reference(cell, x, h0, mx, mh, weights=None, cells=None):
    """weights: (B, E, K) per-sample mixing weights (search); cells: cell name per sample (derived)."""
    space = cell.space
    h, out = h0, []
    for t in range(x.shape[0]):
        c0, g0 = torch.cat([x[t] * mx, h * mh], -1).matmul(cell.w0).chunk(2, -1)
        states = [F.layer_norm(h + torch.sigmoid(c0) * (torch.tanh(g0) - h), (H,))]
        for n, j in enumerate(space.node_ids):
            if weights is not None:
                total = 0
                for i in range(j):
                    for k, op in enumerate(cell.weighted_ops):
                        w = weights[:, space.edge_index(i, j), space.op_index(op)].unsqueeze(1)
                        total = total + w * highway(states[i], cell.node_weights[n][k], op, mh)
            else:
                rows = []
                for b, name in enumerate(cells):
                    i, op = cell.choices[name][j]
                    mat = cell.op_weights[f"node{j}_{op}"]
                    rows.append(highway(states[i][b : b + 1], mat, op, mh[b : b + 1]))
                total = torch.cat(rows)
            states.append(F.layer_norm(total, (H,)))
        h = torch.stack(states[1:]).mean(0)
        out.append(h)
    return torch.stack(out)


def grads_match(cell, run_cell, run_ref, extra, atol):
    """Outputs and the gradients of a random projection of them w.r.t. every parameter and ``extra``."""
    params = [p for p in cell.parameters()] + list(extra)
    probe = torch.randn(T, B, H, dtype=params[0].dtype)
    out = run_cell()
    g_out = torch.autograd.grad((out * probe).sum(), params, allow_unused=True)
    ref = run_ref()
    assert torch.allclose(out, ref, atol=atol, rtol=0), (out - ref).abs().max()
    g_ref = torch.autograd.grad((ref * probe).sum(), params, allow_unused=True)
    for p, a, b in zip(params, g_out, g_ref):
        if b is None:
            assert a is None or a.abs().max() == 0
        else:
            assert a is not None and torch.allclose(a, b, atol=atol, rtol=0), (
                tuple(p.shape),
                (a - b).abs().max(),
            )


def search_setup(dtype, nodes=3, compile="off"):
    space = darts_rnn_space(nodes)
    cell = DartsRNNCell(IN, H, space, dropout_x=P, dropout_h=P, compile=compile).to(dtype).train()
    x = torch.randn(T, B, IN, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    alpha = torch.randn(B, space.num_edges, space.num_ops, dtype=dtype, requires_grad=True)
    return space, cell, x, h0, alpha


def check_search(cell, x, h0, alpha, dtype, atol, per_sample):
    def weights():
        return torch.softmax(alpha, -1) if per_sample else torch.softmax(alpha[0], -1)

    def run_cell():
        torch.manual_seed(7)
        return cell(x, h0, mixing_probs=weights())

    def run_ref():
        full = weights() if per_sample else weights().expand(B, -1, -1)
        return reference(cell, x, h0, *draw_masks(7, dtype), weights=full)

    grads_match(cell, run_cell, run_ref, [x, h0, alpha], atol)


def derived_setup(dtype, nodes=4, compile="off", seed=0):
    space = darts_rnn_space(nodes)
    torch.manual_seed(seed)
    genotype = derive_genotype(
        torch.randn(3, space.num_edges, space.num_ops), space, ["en", "de", "fr"]
    )
    cell = (
        DartsRNNCell(IN, H, space, genotype, dropout_x=P, dropout_h=P, compile=compile)
        .to(dtype)
        .train()
    )
    x = torch.randn(T, B, IN, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    return cell, x, h0


def check_derived(cell, x, h0, cells, dtype, atol):
    def run_cell():
        torch.manual_seed(11)
        return cell(x, h0, cells=cells)

    grads_match(
        cell,
        run_cell,
        lambda: reference(cell, x, h0, *draw_masks(11, dtype), cells=cells),
        [x, h0],
        atol,
    )


@pytest.mark.parametrize("per_sample", [False, True])
def test_fused_search_cell_equals_reference(per_sample):
    _, cell, x, h0, alpha = search_setup(torch.float64)
    check_search(cell, x, h0, alpha, torch.float64, 1e-10, per_sample)
    # evaluation mode: no masks
    cell.eval()
    w = torch.softmax(alpha, -1)
    ones = torch.ones(B, IN, dtype=torch.float64), torch.ones(B, H, dtype=torch.float64)
    assert torch.allclose(
        cell(x, mixing_probs=w),
        reference(cell, x, torch.zeros_like(h0), *ones, weights=w),
        atol=1e-10,
    )


@pytest.mark.parametrize("cells", [["de"] * B, ["en", "fr", "en", "de"]])
def test_fused_derived_cell_equals_reference(cells):
    cell, x, h0 = derived_setup(torch.float64)
    check_derived(cell, x, h0, cells, torch.float64, 1e-10)


def test_tensor_chain_equals_python_chain():
    """The compiled derived step gets the chain as tensors (torch.where picks the activation)."""
    cell, x, h0 = derived_setup(torch.float64, seed=3)
    cell.eval()
    for name in ("en", "de", "fr"):
        xw = torch.randn(B, 2 * H, dtype=torch.float64)
        py = cell._chain(name, "cpu", as_tensors=False)
        tens = cell._chain(name, "cpu", as_tensors=True)
        ops = tuple(cell.weighted_ops)
        a = cell.steps.fn(xw, h0, cell.w0[IN:], *py, None, ops)[0]
        b = cell.steps.fn(xw, h0, cell.w0[IN:], *tens, None, ops)[0]
        assert torch.equal(a, b)


def test_compiled_cell_equals_reference():
    """torch.compile (inductor) of the search and derived steps: outputs and gradients to 1e-5."""
    _, cell, x, h0, alpha = search_setup(torch.float32, nodes=2, compile="on")
    check_search(cell, x, h0, alpha, torch.float32, 1e-5, per_sample=False)
    assert (
        cell.steps.active and cell.steps.failed is None and cell.steps.compile_seconds is not None
    )
    # per-sample mixing weights are one more graph (covered eagerly above); a derived batch of one
    # domain runs the chain step, a batch of several the stacked chains (rnn_steps.domains_step)
    cell, x, h0 = derived_setup(torch.float32, nodes=2, compile="on")
    check_derived(cell, x, h0, ["de"] * B, torch.float32, 1e-5)
    check_derived(cell, x, h0, ["en", "de", "en", "fr"], torch.float32, 1e-5)
    for steps in (cell.steps, cell.domain_steps):
        assert steps.active and steps.failed is None and steps.compile_seconds is not None


def _failing_backend(gm, example_inputs):
    raise RuntimeError("no compiler here")


def test_compile_failure_falls_back_with_one_log_line(caplog):
    _, cell, x, h0, alpha = search_setup(torch.float64, compile="on")
    cell.steps.backend = _failing_backend
    with caplog.at_level(logging.WARNING, logger="mdnas_fairseq.cells.compiled"):
        check_search(cell, x, h0, alpha, torch.float64, 1e-10, per_sample=False)
        check_search(cell, x, h0, alpha, torch.float64, 1e-10, per_sample=True)
    assert not cell.steps.active and "no compiler here" in cell.steps.failed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "running it eagerly" in warnings[0].getMessage()


def test_auto_mode_compiles_once_eager_time_reaches_the_budget():
    _, cell, x, h0, alpha = search_setup(torch.float64, compile="auto")
    cell.steps.backend = "eager"  # the policy, not the code generator, is under test here
    assert cell.steps.auto_devices == ("cuda",)  # by default "auto" never compiles on a CPU
    cell.steps.auto_devices = ("cpu", "cuda")
    cell.steps.compile_after_s = 1e-9
    w = torch.softmax(alpha[0], -1)
    cell.eval()
    with torch.no_grad():
        cell(x, mixing_probs=w)
    assert cell.steps.eager_seconds == 0.0  # evaluation does not count
    cell.train()
    cell(x, mixing_probs=w)
    assert cell.steps.eager_seconds > 0 and not cell.steps.active
    check_search(cell, x, h0, alpha, torch.float64, 1e-10, per_sample=False)
    assert cell.steps.active and cell.steps.failed is None
    off = DartsRNNCell(IN, H, darts_rnn_space(2), compile="off")
    off.steps.compile_after_s = 0.0
    off(torch.randn(T, B, IN), mixing_probs=torch.softmax(torch.randn(5, 5), -1))
    assert not off.steps.active
    derived, x, _ = derived_setup(torch.float64, compile="auto")  # compiled only on CUDA by "auto"
    derived.steps.compile_after_s = 0.0
    derived(x, cells=["en"] * B)
    assert not derived.steps.active and derived.steps.eager_seconds > 0
    _, search, x, _, alpha = search_setup(torch.float64, compile="auto")  # the search cell too
    search.steps.compile_after_s = 0.0
    search(x, mixing_probs=torch.softmax(alpha[0], -1))
    search(x, mixing_probs=torch.softmax(alpha[0], -1))
    assert not search.steps.active and search.steps.eager_seconds > 0


def test_half_precision_cell_with_fp32_mixing_probs():
    space = darts_rnn_space(3)
    cell = DartsRNNCell(IN, H, space, compile="off").eval()
    x = torch.randn(T, B, IN)
    w = torch.softmax(
        torch.randn(space.num_edges, space.num_ops), -1
    )  # fp32, as softmax(alpha) stays
    expected = cell(x, mixing_probs=w)
    half = cell.to(torch.float16)
    out = half(x.to(torch.float16), mixing_probs=w)
    assert out.dtype == torch.float16
    assert torch.allclose(out.float(), expected, atol=0.02)


def test_compiled_search_step_is_one_graph_for_every_step_and_batch_size():
    """An expanded initial state (stride 0, as the language model passes it) and a smaller last
    batch must not recompile the step: torch.compile specialises on strides and, for a graph
    first built at a step other than the first, on the batch size, and on whether alpha needs a
    gradient (the weight step's or the alpha step's); each recompile cost ~20 s."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    space = darts_rnn_space(2)
    cell = DartsRNNCell(IN, H, space, compile="on").train()
    counter = CompileCounter()
    cell.steps.backend = counter
    init = torch.nn.Parameter(torch.randn(H))
    alpha = torch.randn(space.num_edges, space.num_ops, requires_grad=True)
    for batch, fixed_alpha in ((B, False), (B + 3, False), (B - 1, True)):
        x = torch.randn(T, batch, IN)
        probs = torch.softmax(alpha.detach() if fixed_alpha else alpha, -1)  # weight / alpha step
        cell(x, init.expand(batch, -1), mixing_probs=probs).sum().backward()
    assert counter.frame_count == 1
    # and the graph computes what the eager step computes, the initial state's gradient included
    eager = DartsRNNCell(IN, H, space, compile="off").train()
    eager.load_state_dict(cell.state_dict())
    grads = []
    for c in (cell, eager):
        init.grad = None
        torch.manual_seed(3)
        c(x, init.expand(x.shape[1], -1), mixing_probs=torch.softmax(alpha, -1)).sum().backward()
        grads.append(init.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
