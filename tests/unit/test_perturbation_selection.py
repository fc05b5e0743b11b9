"""Perturbation-based selection (mdnas_fairseq.search.selection) on a tiny supernetwork built by
construction: every (edge, operation) module of a DAG is a linear map, all zero but one per domain,
which alone carries that domain's signal. Its alpha is made the SMALLEST on its edge (and its edge
the weakest input of its node), so argmax picks something else; perturbation must pick it."""

import pytest
import torch
import torch.nn.functional as F

from mdnas_fairseq.search import (
    GenotypeEdge,
    darts_cnn_space,
    darts_rnn_space,
    derive_genotype,
    transformer_lm_space,
)
from mdnas_fairseq.search.alpha import ArchitectureParameters
from mdnas_fairseq.search.selection import (
    SelectionError,
    mixing_override,
    perturbation_select,
)

CLASSES = 4  # state width = number of classes; each domain's inputs use its own half of 2*CLASSES


class ToySupernet:
    """States of width 2C: ``s_j = sum_(i->j) sum_k W[(i,j), k] * s_i M[(i,j), k]``; logits are the
    mean of the output nodes' first C features. ``M`` holds one matrix per (edge, operation)."""

    def __init__(self, space):
        self.space = space
        self.mats = torch.zeros(space.num_edges, space.num_ops, 2 * CLASSES, 2 * CLASSES)

    def logits(self, x, w):
        states = {i: x for i in range(self.space.num_input_nodes)}
        for j in self.space.node_ids:
            s = 0
            for i in self.space.node_inputs(j):
                e = self.space.edge_index(i, j)
                s = s + torch.einsum("k,bc,kcd->bd", w[e], states[i], self.mats[e])
            states[j] = s
        out = torch.stack([states[j] for j in self.space.output_nodes]).mean(0)
        return out[:, :CLASSES]


def decisive_case(space, decisive, seed=0):
    """Two domains; domain d's labels come only through operation ``decisive[d] = (0, j, op)`` (an
    edge from input state 0, which holds the domain's input).

    Its module maps the domain's half of the input to the classes, scaled so that the supernet
    predicts the labels at the initial weights, and the later nodes of a chain carry it to the
    output. Alpha: the decisive operation the lowest on its edge and the other inputs of its node
    stronger than its edge, so argmax misses it. Every other module is zero."""
    torch.manual_seed(seed)
    net = ToySupernet(space)
    alpha = torch.randn(2, space.num_edges, space.num_ops)
    for d, (i, j, op) in enumerate(decisive):
        e = space.edge_index(i, j)
        alpha[d, e] = 2.0
        alpha[d, e, space.op_index(op)] = -2.0  # the smallest on its edge ...
        for other in space.node_inputs(j):
            if other != i:
                alpha[d, space.edge_index(other, j)] += 4.0  # ... its edge the weakest input
    allowed = torch.tensor(space.allowed_mask())
    probs = torch.softmax(alpha.masked_fill(~allowed, float("-inf")), -1)
    data = []
    for d, (i, j, op) in enumerate(decisive):
        half = slice(d * CLASSES, (d + 1) * CLASSES)
        x = torch.zeros(64, 2 * CLASSES)
        x[:, half] = torch.randn(64, CLASSES)
        teacher = 4 * torch.randn(CLASSES, CLASSES)
        data.append((x, (x[:, half] @ teacher).argmax(1)))
        e, k = space.edge_index(i, j), space.op_index(op)
        share = 1 / len(space.output_nodes) if j in space.output_nodes else 1.0
        net.mats[e, k, half, :CLASSES] = teacher / (probs[d, e, k] * share)
        while j not in space.output_nodes:  # a chain: every operation of the next edges passes
            nxt = next(n for n in space.node_ids if j in space.node_inputs(n))
            e = space.edge_index(j, nxt)
            for k, name in enumerate(space.operations):
                if name != space.none_op and name in space.allowed(e):
                    net.mats[e, k, :CLASSES, :CLASSES] = torch.eye(CLASSES)
            j = nxt
    return net, probs, alpha, data


def heldout(net, data):
    def loss(row, w):
        x, y = data[row]
        return float(F.cross_entropy(net.logits(x, w), y))

    return loss


SPACES = {
    "recurrent": (darts_rnn_space(3), [(0, 2, "relu"), (0, 3, "sigmoid")]),
    "transformer": (transformer_lm_space(2), [(0, 1, "lightconv_3"), (0, 1, "dwconv_7")]),
    "conv": (darts_cnn_space(2), [(0, 3, "dil_conv_5x5"), (0, 2, "avg_pool_3x3")]),
}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_the_decisive_operation_is_selected_where_argmax_misses_it(name):
    space, decisive = SPACES[name]
    net, probs, alpha, data = decisive_case(space, decisive)
    argmax = derive_genotype(alpha, space, ["a", "b"])
    chosen = perturbation_select(probs, space, ["a", "b"], heldout(net, data), seed=1).genotype
    for d, (i, j, op) in zip(("a", "b"), decisive):
        edge = GenotypeEdge(node=j, input=i, op=op)
        assert edge not in argmax.cells[d]
        assert edge in chosen.cells[d], (name, d, chosen.cells[d])
    # the chosen cells are valid cells of the space (MultiDomainGenotype validates them)
    assert chosen.space == space and chosen.domains == ("a", "b")


def test_order_decisions_and_finetunes_are_counted():
    space = darts_rnn_space(4)  # 10 edges; nodes 2, 3, 4 have more than one input
    net, probs, _, data = decisive_case(space, [(0, 2, "relu"), (0, 3, "sigmoid")])
    evaluate = heldout(net, data)
    calls, tunes = [], []

    def counted(row, w):
        calls.append(row)
        return evaluate(row, w)

    def finetune(w, steps):
        tunes.append((steps, w))

    out = perturbation_select(
        probs, space, ["a", "b"], counted, finetune, finetune_steps=3, order="fixed"
    )
    assert out.edge_order == space.edges and out.node_order == [2, 3, 4]
    decisions = space.num_edges + 3
    assert out.finetunes == len(tunes) == decisions - 1  # between decisions, not after the last
    assert all(steps == 3 for steps, _ in tunes)
    # per decision and domain: the loss as it is, then one per candidate (4 ops, or j inputs)
    expected = 2 * (space.num_edges * (1 + 4) + sum(1 + j for j in (2, 3, 4)))
    assert len(calls) == expected
    # the t-th fine-tune sees the first t+1 edges discretised (one-hot) for every domain
    for t, (_, w) in enumerate(tunes[: space.num_edges - 1]):
        onehot = ((w == 1).sum(-1) == 1) & ((w == 0).sum(-1) == space.num_ops - 1)
        assert onehot[:, : t + 1].all() and not onehot[:, t + 1 :].any()
    # after the input decisions of nodes 2, 3, 4 only the kept edge of each node is non-zero
    last = tunes[-1][1]
    for j in (2, 3):
        rows = last[:, space.node_edge_slice(j)].sum(-1)
        assert ((rows > 0).sum(-1) == 1).all()
    assert len(out.decisions) == 2 * decisions
    # random order: a seeded permutation, reproducible, and another seed gives another one
    orders = [
        perturbation_select(probs, space, ["a", "b"], evaluate, order="random", seed=s).edge_order
        for s in (0, 0, 1)
    ]
    assert orders[0] == orders[1] != orders[2] and sorted(orders[0]) == sorted(space.edges)


def test_mixing_override_routes_the_weights_and_restores_alpha():
    alphas = ArchitectureParameters(2, 3, 5)
    before = alphas.mixing_probs().clone()
    w = torch.rand(2, 3, 5)
    with mixing_override(alphas, w):
        assert torch.equal(alphas.mixing_probs(), w)
        assert torch.equal(alphas.mixing_probs(1, temperature=0.3), w[1])
        assert torch.equal(alphas.mixing_probs(torch.tensor([1, 0, 1])), w[[1, 0, 1]])
        with pytest.raises(SelectionError, match="already overridden"):
            with mixing_override(alphas, w):
                pass
    assert torch.equal(alphas.mixing_probs(), before)
    with pytest.raises(SelectionError, match="shape"):
        with mixing_override(alphas, torch.rand(3, 3, 5)):
            pass


def test_bad_input_is_named():
    space = darts_rnn_space(2)
    probs = torch.full((1, space.num_edges, space.num_ops), 0.2)
    with pytest.raises(SelectionError, match="expected \\(2, 3, 5\\)"):
        perturbation_select(probs, space, ["a", "b"], lambda r, w: 0.0)
    with pytest.raises(SelectionError, match="order"):
        perturbation_select(probs, space, ["a"], lambda r, w: 0.0, order="sorted")
    with pytest.raises(SelectionError, match="no fine-tune"):
        perturbation_select(probs, space, ["a"], lambda r, w: 0.0, finetune_steps=2)
    with pytest.raises(SelectionError, match="nan"):
        perturbation_select(probs, space, ["a"], lambda r, w: float("nan"))
