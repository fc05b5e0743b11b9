"""Parameter tables (mdnas_fairseq.search.params): counts against hand computations, against the
pre-table code path (multimodel_param_count with the cells' own counters) and against built models'
``sum(p.numel())``; JSON round trip and bad tables; the expected cell size under softmax(alpha), its
normalisation and its gradient (hand formula and a gradient step towards cheaper operations)."""

import json

import pytest
import torch

from mdnas_fairseq.cells.conv import DartsConvClassifier, op_param_count
from mdnas_fairseq.cells.rnn import DartsRNNLanguageModel, rnn_share_key
from mdnas_fairseq.search import (
    DerivationError,
    GenotypeEdge,
    MultiDomainGenotype,
    ParamPenalty,
    ParamTable,
    darts_cnn_space,
    darts_rnn_space,
    derive_genotype,
    multimodel_param_count,
    param_penalty,
    uniform_param_table,
)

E = GenotypeEdge
# A hand table for darts_rnn_space(3): tanh 10, relu 20, sigmoid 30, identity 0 (none 0), 100 shared.
HAND_COSTS = {"none": 0, "tanh": 10, "relu": 20, "sigmoid": 30, "identity": 0}


def hand_genotype():
    space = darts_rnn_space(3)
    cells = {
        "a": (E(1, 0, "tanh"), E(2, 1, "relu"), E(3, 1, "sigmoid")),
        "b": (E(1, 0, "tanh"), E(2, 0, "relu"), E(3, 2, "identity")),
    }
    return MultiDomainGenotype(space, ("a", "b"), cells)


def test_multimodel_count_by_hand_for_both_sharing_rules():
    g = hand_genotype()
    node = uniform_param_table(g.space, HAND_COSTS, "node", 100)
    edge = uniform_param_table(g.space, HAND_COSTS, "edge", 100)
    # 'node': modules (1,tanh) 10, (2,relu) 20 [inputs 1 and 0 share], (3,sigmoid) 30, (3,identity) 0
    assert node.multimodel_count(g) == 100 + 10 + 20 + 30 + 0
    # 'edge': (0,1,tanh) 10, (1,2,relu) 20, (0,2,relu) 20, (1,3,sigmoid) 30, (2,3,identity) 0
    assert edge.multimodel_count(g) == 100 + 10 + 20 + 20 + 30
    assert node.param_counts(g) == {
        "domains": {"a": 160, "b": 130},
        "multimodel": 160,
        "multimodel_cells": 60,  # the four modules above, without the 100 shared
    }
    assert edge.cell_count(g.cells["b"]) == 30
    # shared (domain, edge) pairs: 'node' -> a:(0,1),(1,2) and b:(0,1),(0,2) = 4; 'edge' -> only (0,1) twice
    assert node.shared_edges(g) == 4 and edge.shared_edges(g) == 2
    # smallest cell: identity (0) on every node; largest: sigmoid (30) on each of the 3 nodes
    assert (
        node.smallest_cell() == 0
        and node.smallest_multimodel() == 100
        and node.largest_cell() == 90
    )


def test_conv_table_smallest_and_largest_by_hand():
    table = DartsConvClassifier(["r0"], channels=4, num_nodes=2).param_table()
    # 2 nodes x 2 edges; cheapest: parameter-free ops; largest: sep_conv_5x5 = 2 (4*25 + 16) = 232 on 4 edges
    assert table.smallest_cell() == 0 and table.largest_cell() == 4 * 232
    assert table.smallest_multimodel() == table.shared_params == (4 * 9 + 8) + (2 * 4 * 10 + 10)


def random_cells(space, names, seed):
    g = torch.Generator().manual_seed(seed)
    return derive_genotype(
        torch.randn(len(names), space.num_edges, space.num_ops, generator=g), space, names
    )


@pytest.mark.parametrize(
    "names,shared",
    [(["en"], False), (["en", "de"], False), (["en", "de", "fr"], False), (["en", "de"], True)],
)
def test_rnn_table_equals_old_count_and_built_model(names, shared):
    space = darts_rnn_space(4)
    search = DartsRNNLanguageModel(30, 1, 6, 6, names, num_nodes=4, shared_architecture=shared)
    table = search.param_table()
    assert all(
        table.module_key(E(j, i, op)) == rnn_share_key(E(j, i, op))
        for i, j in space.edges
        for op in space.operations
    )
    for seed in range(3):
        genotype = random_cells(space, search.architecture_names, seed)
        old = multimodel_param_count(
            genotype, search.cell.op_param_count, search.shared_param_count(), rnn_share_key
        )
        built = DartsRNNLanguageModel(
            30, 1, 6, 6, names, num_nodes=4, genotype=genotype, shared_architecture=shared
        )
        assert table.multimodel_count(genotype) == old == sum(p.numel() for p in built.parameters())
        assert built.genotype_param_count(genotype) == old
        for d in genotype.domains:  # a domain's model alone = a multimodel holding only its cell
            alone = MultiDomainGenotype(space, (d,), {d: genotype.cells[d]})
            model = DartsRNNLanguageModel(30, 1, 6, 6, [d], num_nodes=4, genotype=alone)
            assert table.multimodel_count(genotype, [d]) == sum(
                p.numel() for p in model.parameters()
            )


@pytest.mark.parametrize("num_domains,channels,nodes", [(1, 4, 2), (3, 4, 3), (4, 8, 4)])
def test_conv_table_equals_old_count_and_built_model(num_domains, channels, nodes):
    domains = [f"rot{90 * k}" for k in range(num_domains)]
    space = darts_cnn_space(nodes)
    search = DartsConvClassifier(
        domains, channels=channels, num_nodes=nodes, stem_stride=2, stem_pool=2
    )
    table = search.param_table()
    for seed in range(3):
        genotype = random_cells(space, domains, seed)
        old = multimodel_param_count(
            genotype, lambda e: op_param_count(e.op, channels), search.shared_param_count()
        )
        built = DartsConvClassifier(
            domains,
            channels=channels,
            num_nodes=nodes,
            genotype=genotype,
            stem_stride=2,
            stem_pool=2,
        )
        assert table.multimodel_count(genotype) == old == sum(p.numel() for p in built.parameters())
        d = domains[-1]
        alone = DartsConvClassifier(
            [d],
            channels=channels,
            num_nodes=nodes,
            stem_stride=2,
            stem_pool=2,
            genotype=MultiDomainGenotype(space, (d,), {d: genotype.cells[d]}),
        )
        assert table.multimodel_count(genotype, [d]) == sum(p.numel() for p in alone.parameters())


def test_json_round_trip_and_bad_tables():
    table = DartsConvClassifier(["a", "b"], channels=4, num_nodes=3).param_table()
    data = json.loads(json.dumps(table.to_dict()))
    assert ParamTable.from_dict(data, table.space, source="f.json") == table
    rnn = DartsRNNLanguageModel(30, 1, 6, 6, ["en"], num_nodes=3).param_table()
    assert ParamTable.from_dict(json.loads(json.dumps(rnn.to_dict())), rnn.space) == rnn
    with pytest.raises(DerivationError, match="f.json.*has no 'module_sharing'"):
        ParamTable.from_dict(
            {k: v for k, v in data.items() if k != "module_sharing"}, table.space, "f.json"
        )
    with pytest.raises(DerivationError, match="f.json.*not the edges"):
        ParamTable.from_dict(data, darts_cnn_space(2), "f.json")
    bad_ops = dict(
        data, op_params={k: v for k, v in data["op_params"].items() if k != "skip_connect"}
    )
    with pytest.raises(DerivationError, match="f.json.*must map the operations"):
        ParamTable.from_dict(bad_ops, table.space, "f.json")
    short = dict(data, op_params=dict(data["op_params"], sep_conv_3x3=[1, 2]))
    with pytest.raises(DerivationError, match="f.json.*9 integer counts"):
        ParamTable.from_dict(short, table.space, "f.json")
    with pytest.raises(DerivationError, match="'none' must have 0"):
        ParamTable.from_dict(
            dict(data, op_params=dict(data["op_params"], none=[1] * 9)), table.space
        )
    uneven = [[0, 5, 5, 5, 5], [0, 6, 6, 6, 6], [0, 5, 5, 5, 5]]  # node 2's inputs 0 and 1 differ
    with pytest.raises(DerivationError, match="node 2"):
        ParamTable(darts_rnn_space(2), uneven, "node", 0)


# ------------------------------------------------------------------------------ expected size
def test_expected_cell_params_by_hand():
    space = darts_rnn_space(
        2
    )  # edges (0,1), (0,2), (1,2); node 1 keeps 1 of 1 input, node 2 1 of 2
    table = uniform_param_table(space, HAND_COSTS, "node", 100)
    #                      none tanh relu sigm iden   (costs 0, 10, 20, 30, 0)
    probs = torch.tensor(
        [
            [0.1, 0.2, 0.3, 0.4, 0.0],  # 2 + 6 + 12 = 20, weight 1
            [0.5, 0.5, 0.0, 0.0, 0.0],  # 5, weight 1/2
            [0.0, 0.0, 0.0, 1.0, 0.0],
        ],  # 30, weight 1/2
        dtype=torch.float64,
    )
    expected = 20 + 0.5 * 5 + 0.5 * 30
    assert float(table.expected_cell_params(probs)) == pytest.approx(expected)
    # normalised by the largest cell: sigmoid on both nodes = 60 (= the matrix maximum)
    assert table.largest_cell() == 60
    assert float(param_penalty(probs, table)) == pytest.approx(expected / 60)
    # batched over domains: one value per domain, equal to the single-domain form
    free = torch.zeros(3, 5, dtype=torch.float64)
    free[:, 4] = 1.0  # identity everywhere: 0 parameters
    dearest = torch.zeros(3, 5, dtype=torch.float64)
    dearest[:, 3] = 1.0
    batch = torch.stack([probs, free, dearest])
    torch.testing.assert_close(
        ParamPenalty(table)(batch), torch.tensor([expected / 60, 0.0, 1.0], dtype=torch.float64)
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: DartsConvClassifier(["a", "b"], channels=4, num_nodes=4).param_table(),
        lambda: DartsRNNLanguageModel(30, 1, 6, 6, ["a", "b"], num_nodes=5).param_table(),
    ],
)
def test_normaliser_is_the_largest_cell_and_penalty_in_unit_interval(make):
    table = make()
    penalty = ParamPenalty(table)
    assert penalty.normaliser == pytest.approx(table.largest_cell())
    probs = torch.softmax(
        3 * torch.randn(50, table.space.num_edges, table.space.num_ops, dtype=torch.float64), -1
    )
    values = penalty(probs)
    assert values.shape == (50,) and bool((values >= 0).all()) and bool((values <= 1).all())


def test_penalty_gradient_is_the_hand_formula_and_points_to_cheaper_operations():
    table = DartsConvClassifier(["a", "b"], channels=4, num_nodes=3).param_table()
    space = table.space
    cost = (
        torch.tensor(table.expected_cost_matrix(), dtype=torch.float64)
        / ParamPenalty(table).normaliser
    )
    alpha = (
        0.5
        * torch.randn(
            2,
            space.num_edges,
            space.num_ops,
            generator=torch.Generator().manual_seed(0),
            dtype=torch.float64,
        )
    ).requires_grad_(True)
    ParamPenalty(table)(torch.softmax(alpha, -1)).sum().backward()
    p = torch.softmax(alpha.detach(), -1)
    # d/d alpha_k sum_j p_j c_j = p_k (c_k - sum_j p_j c_j)
    hand = p * (cost - (p * cost).sum(-1, keepdim=True))
    torch.testing.assert_close(alpha.grad, hand)
    stepped = torch.softmax(alpha.detach() - 20.0 * alpha.grad, -1)
    dearest = space.op_index("sep_conv_5x5")
    for free in ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3"):
        assert bool((stepped[..., space.op_index(free)] > p[..., space.op_index(free)]).all()), free
    assert bool((stepped[..., dearest] < p[..., dearest]).all())
