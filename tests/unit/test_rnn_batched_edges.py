"""Batched edges in the derived recurrent cell: the nodes of a wave (all inputs already computed)
cost one matrix product (``rnn_steps.wave_step``), and compute exactly what the node-by-node chain
(``rnn_steps.derived_step``, the cell with ``batch_edges = False``) computes on the same weights."""

import pytest
import torch

from mdnas_fairseq.cells.rnn import DartsRNNCell
from mdnas_fairseq.cells.rnn_steps import chain_waves
from mdnas_fairseq.search import GenotypeEdge, MultiDomainGenotype, darts_rnn_space, derive_genotype

IN, H, B, T, P = 5, 6, 4, 4, 0.3
# DARTS' published recurrent cell (DARTS_V2): node j = (operation, input state)
DARTS_V2 = [
    ("sigmoid", 0),
    ("relu", 1),
    ("relu", 1),
    ("identity", 1),
    ("tanh", 2),
    ("sigmoid", 5),
    ("tanh", 3),
    ("relu", 5),
]


def darts_v2_genotype():
    space = darts_rnn_space(8)
    cell = [GenotypeEdge(node=j, input=i, op=op) for j, (op, i) in enumerate(DARTS_V2, 1)]
    return MultiDomainGenotype(space, ("en",), {"en": cell})


def test_waves_of_the_darts_cell():
    ops = ("tanh", "relu", "sigmoid", "identity")
    inputs = [i for _, i in DARTS_V2]
    codes = [ops.index(op) for op, _ in DARTS_V2]
    assert chain_waves(inputs, codes) == (
        ((1,), 0, ((2, 1),)),
        ((2, 3, 4), 1, ((1, 2), (3, 1))),  # three nodes read s_1: one (B, H) @ (H, 3 * 2H)
        ((5, 7), (2, 3), ((0, 2),)),  # two nodes read s_2 and s_3: one batched product
        ((8, 6), 5, ((1, 1), (2, 1))),  # ordered by operation: relu before sigmoid
    )


def cell_and_inputs(genotype, dtype=torch.float64):
    torch.manual_seed(0)
    cell = DartsRNNCell(IN, H, genotype.space, genotype, dropout_x=P, dropout_h=P, compile="off")
    x = torch.randn(T, B, IN, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    return cell.to(dtype).train(), x, h0


def outputs_and_grads(cell, x, h0, name, batch_edges):
    cell.batch_edges = batch_edges
    torch.manual_seed(5)  # the same dropout masks in both runs
    out = cell(x, h0, cells=[name] * B)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    params = [x, h0] + list(cell.parameters())
    return out, torch.autograd.grad((out * probe).sum(), params, allow_unused=True)


@pytest.mark.parametrize("seed", [None, 0, 1, 2, 3])
def test_batched_edges_equal_the_node_by_node_chain(seed):
    if seed is None:
        genotype = darts_v2_genotype()
    else:
        space = darts_rnn_space(8)
        alpha = torch.randn(
            2, space.num_edges, space.num_ops, generator=torch.Generator().manual_seed(seed)
        )
        genotype = derive_genotype(alpha, space, ["en", "de"])
    cell, x, h0 = cell_and_inputs(genotype)
    for name in genotype.domains:
        out_b, g_b = outputs_and_grads(cell, x, h0, name, True)
        out_c, g_c = outputs_and_grads(cell, x, h0, name, False)
        assert (out_b - out_c).abs().max() < 1e-10
        for a, b in zip(g_b, g_c):
            if b is None:
                assert a is None or a.abs().max() == 0
            else:
                assert (a - b).abs().max() < 1e-10
        cell.eval()
        with torch.no_grad():
            cell.batch_edges = True
            a = cell(x, cells=[name] * B)
            cell.batch_edges = False
            assert (a - cell(x, cells=[name] * B)).abs().max() < 1e-10
        cell.train()


def test_batched_edges_are_fewer_products():
    """DARTS_V2 in four waves: four node products per step instead of eight."""
    cell, x, h0 = cell_and_inputs(darts_v2_genotype())
    products = {}
    for batch_edges in (True, False):
        cell.batch_edges = batch_edges
        with torch.no_grad(), torch.profiler.profile() as prof:
            cell(x, h0, cells=["en"] * B)
        names = [e.name for e in prof.events()]
        products[batch_edges] = sum(n in ("aten::mm", "aten::bmm", "aten::addmm") for n in names)
    # the input projection of all steps, then per step the first state's product plus one per
    # wave (4) or per node (8)
    assert products[True] == 1 + T * (1 + 4) and products[False] == 1 + T * (1 + 8)
