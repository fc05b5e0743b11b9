"""The parameter budget derivation (mdnas_fairseq.search.budget): the rule on a hand-built alpha whose
moves are worked out by hand, monotone budgets, counts equal to built models, the smallest size."""

import numpy as np
import pytest
import torch

from mdnas_fairseq.cells.conv import DartsConvClassifier
from mdnas_fairseq.cells.rnn import DartsRNNLanguageModel
from mdnas_fairseq.search import (
    DerivationError,
    GenotypeEdge,
    argmax_genotype,
    budget_sequence,
    darts_cnn_space,
    darts_rnn_space,
    derive_with_budget,
    uniform_param_table,
)

E = GenotypeEdge

# darts_rnn_space(2): edges (0,1), (0,2), (1,2); made-up costs, one module per (node, op), 1000 shared.
COSTS = {"none": 0, "tanh": 100, "relu": 20, "sigmoid": 60, "identity": 0}
#                 none  tanh  relu  sigm  iden
HAND_PROBS = [
    [
        [0.05, 0.50, 0.10, 0.30, 0.05],  # A (0,1): tanh
        [0.30, 0.20, 0.20, 0.20, 0.10],  # A (0,2)
        [0.10, 0.30, 0.45, 0.10, 0.05],
    ],  # A (1,2): relu 0.45 > 0.20 -> node 2 keeps (1, relu)
    [
        [0.05, 0.35, 0.10, 0.40, 0.10],  # B (0,1): sigmoid
        [0.00, 0.50, 0.44, 0.03, 0.03],  # B (0,2): tanh 0.50 > 0.42 -> node 2 keeps (0, tanh)
        [0.29, 0.10, 0.42, 0.10, 0.09],
    ],  # B (1,2)
]


def hand_table():
    return uniform_param_table(darts_rnn_space(2), COSTS, "node", 1000)


def test_the_rule_on_a_hand_built_alpha():
    table = hand_table()
    start = argmax_genotype(HAND_PROBS, table.space, ["A", "B"])
    assert start.cells["A"] == (E(1, 0, "tanh"), E(2, 1, "relu"))
    assert start.cells["B"] == (E(1, 0, "sigmoid"), E(2, 0, "tanh"))
    assert table.multimodel_count(start) == 1000 + (100 + 60) + (20 + 100)  # 1280
    # Merges at the start (cost = probability lost / parameters saved):
    #   A node 1 tanh -> (0, sigmoid):   0.50 - 0.30 = 0.20 / 100 = 0.0020
    #   B node 1 sigmoid -> (0, tanh):   0.40 - 0.35 = 0.05 / 60  = 0.00083
    #   A node 2 relu -> (1, tanh):      0.45 - 0.30 = 0.15 / 20  = 0.0075  ((0, tanh): 0.25 / 20)
    #   B node 2 tanh -> (0, relu):      0.50 - 0.44 = 0.06 / 100 = 0.0006  <- least per parameter
    #   B node 2 tanh -> (1, relu):      0.50 - 0.42 = 0.08 / 100 = 0.0008
    # The recurrent module (node 2, relu) serves any input, so B keeps its own input 0. The least
    # probability alone would pick B node 1 (0.05); the most parameters alone A node 1 at step 2.
    # Then B node 1 (0.00083); then no merge is left, node moves (all domains take X):
    #   node 1 from tanh (held 0.50 + 0.35): sigmoid 0.15/40 = 0.00375 < identity 0.70/100 < relu 0.65/80
    #   node 1 from sigmoid (held 0.70): identity 0.55/60 = 0.0092 < relu 0.50/40; node 2 (0.75/20) later
    #   node 2 from relu (held 0.45 + 0.44): (1, identity) 0.75/20 < (0, identity) 0.76/20
    expected = [
        ("merge", 2, ("B",), ((0, "relu"),), 0.06, 100, 1180),
        ("merge", 1, ("B",), ((0, "tanh"),), 0.05, 60, 1120),
        ("node", 1, ("A", "B"), ((0, "sigmoid"),), 0.15, 40, 1080),
        ("node", 1, ("A", "B"), ((0, "identity"),), 0.55, 60, 1020),
        ("node", 2, ("A", "B"), ((1, "identity"),), 0.75, 20, 1000),
    ]
    steps = [s for s, _ in budget_sequence(HAND_PROBS, table, ["A", "B"])]
    got = [
        (
            s.kind,
            s.node,
            s.domains,
            s.after,
            round(s.probability_cost, 10),
            s.params_saved,
            s.params_after,
        )
        for s in steps
    ]
    assert got == [e[:4] + (pytest.approx(e[4]),) + e[5:] for e in expected]
    assert table.smallest_multimodel() == 1000
    # budgets pick the first genotype of the sequence at or under them
    for budget, moves, count in [
        (1280, 0, 1280),
        (1200, 1, 1180),
        (1180, 1, 1180),
        (1179, 2, 1120),
        (1000, 5, 1000),
    ]:
        genotype, taken = derive_with_budget(HAND_PROBS, table, ["A", "B"], budget)
        assert (len(taken), table.multimodel_count(genotype)) == (moves, count)
    with pytest.raises(
        DerivationError, match="below the smallest possible multimodel, 1000 parameters"
    ):
        derive_with_budget(HAND_PROBS, table, ["A", "B"], 999)


def random_probs(num_domains, space, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(
        scale * torch.randn(num_domains, space.num_edges, space.num_ops, generator=g), -1
    )


def merge_adopts_existing_modules(step, before, table):
    """A merge's new edge uses a module another domain already had at that node, and frees one."""
    (d,) = step.domains
    others = {
        table.module_key(e)
        for o in before.domains
        if o != d
        for e in before.cells[o]
        if e.node == step.node
    }
    new = set(step.after) - set(step.before[d])
    return len(new) == 1 and table.module_key(E(step.node, *next(iter(new)))) in others


@pytest.mark.parametrize("kind", ["conv", "rnn"])
def test_budgets_are_monotone_and_counts_equal_built_models(kind):
    names = ["a", "b", "c"]
    if kind == "conv":
        net = DartsConvClassifier(names, channels=4, num_nodes=4)
        build = lambda g: DartsConvClassifier(names, channels=4, num_nodes=4, genotype=g)  # noqa: E731
    else:
        net = DartsRNNLanguageModel(20, 1, 4, 4, names, num_nodes=6)
        build = lambda g: DartsRNNLanguageModel(20, 1, 4, 4, names, num_nodes=6, genotype=g)  # noqa: E731
    table = net.param_table()
    probs = random_probs(3, table.space, seed=5)
    start = argmax_genotype(probs, table.space, names)
    searched = table.multimodel_count(start)
    smallest = table.smallest_multimodel()
    # the whole sequence: every step lowers the count, merges adopt existing modules, the end is the smallest
    previous = start
    sequence = list(budget_sequence(probs, table, names))
    for step, genotype in sequence:
        after = table.multimodel_count(genotype)
        assert step.params_after == after == table.multimodel_count(previous) - step.params_saved
        if step.kind == "merge":
            assert merge_adopts_existing_modules(step, previous, table)
        previous = genotype
    assert sequence[-1][0].params_after == smallest
    # at the end every domain uses every parameter of the multimodel (all modules with weights shared)
    assert all(table.multimodel_count(genotype, [n]) == smallest for n in names)
    # recurrent ops all cost one matrix: merges alone reach the smallest; conv needs node moves to free ops
    kinds = [s.kind for s, _ in sequence]
    assert set(kinds) == ({"merge", "node"} if kind == "conv" else {"merge"})
    assert kinds == sorted(kinds)  # node moves only once no merge saves anything ("merge" < "node")
    budgets = np.linspace(searched, smallest, 12).round().astype(int).tolist()
    results = []
    for budget in budgets:
        genotype, _ = derive_with_budget(probs, table, names, budget)
        count = table.multimodel_count(genotype)
        assert count <= budget
        assert count == sum(p.numel() for p in build(genotype).parameters())
        results.append((count, table.shared_edges(genotype)))
    for (c1, s1), (c2, s2) in zip(results, results[1:]):
        assert c2 <= c1 and s2 >= s1
    assert results[0] == (searched, table.shared_edges(start)) and results[-1][0] == smallest
    assert derive_with_budget(probs, table, names, searched)[0] == start


def test_budget_below_the_smallest_names_it():
    table = DartsConvClassifier(["a", "b"], channels=4, num_nodes=2).param_table()
    smallest = table.smallest_multimodel()
    probs = random_probs(2, darts_cnn_space(2), seed=0)
    genotype, _ = derive_with_budget(probs, table, ["a", "b"], smallest)
    assert table.multimodel_count(genotype) == smallest
    with pytest.raises(
        DerivationError, match=f"budget {smallest - 1} is below .* {smallest} parameters"
    ):
        derive_with_budget(probs, table, ["a", "b"], smallest - 1)
