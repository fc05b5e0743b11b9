"""Random genotypes (mdnas_fairseq.search.random_genotypes): valid, uniform (chi-square against the
count of valid choices), reproducible for a seed, and matched in cell size within the tolerance
below the target (never larger)."""

import itertools
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from mdnas_fairseq.cells.conv import DartsConvClassifier
from mdnas_fairseq.search import (
    DerivationError,
    MultiDomainGenotype,
    darts_cnn_space,
    darts_rnn_space,
    random_cell,
    random_copied_genotype,
    random_genotype,
    random_matched_genotype,
    uniform_param_table,
)

DOMAINS = ("rot0", "rot90", "rot180")


def test_random_genotypes_are_valid_and_reproducible():
    for space in (darts_rnn_space(8), darts_cnn_space(4)):
        for seed in range(5):
            g = random_genotype(space, DOMAINS, np.random.default_rng(seed))
            # the constructor's validator is independent of the drawing code; check again by hand
            MultiDomainGenotype(space, g.domains, g.cells)
            for cell in g.cells.values():
                for j in space.node_ids:
                    edges = [e for e in cell if e.node == j]
                    assert len(edges) == space.edges_per_node == len({e.input for e in edges})
                    assert all(
                        0 <= e.input < j and e.op in space.operations and e.op != "none"
                        for e in edges
                    )
            assert g == random_genotype(space, DOMAINS, np.random.default_rng(seed))
        a, b = (random_genotype(space, DOMAINS, np.random.default_rng(s)) for s in (0, 1))
        assert a != b


def test_random_cells_are_uniform_over_the_valid_node_choices():
    # conv node 4 has inputs 0..3: C(4, 2) = 6 input pairs x 7^2 operation pairs = 294 equally likely choices;
    # check the 6 input pairs and the 7 operations of the first kept edge separately (chi-square, fixed seed)
    space = darts_cnn_space(3)
    ops = [op for op in space.operations if op != "none"]
    rng = np.random.default_rng(123)
    pairs, first_ops = Counter(), Counter()
    draws = 6000
    for _ in range(draws):
        node4 = sorted((e.input, e.op) for e in random_cell(space, rng) if e.node == 4)
        pairs[(node4[0][0], node4[1][0])] += 1
        first_ops[node4[0][1]] += 1
    all_pairs = list(itertools.combinations(range(4), 2))
    assert set(pairs) == set(all_pairs)
    assert chisquare([pairs[p] for p in all_pairs]).pvalue > 1e-3
    assert chisquare([first_ops[op] for op in ops]).pvalue > 1e-3


def test_matched_genotype_matches_cells_below_target_and_counts_its_draws():
    space = darts_cnn_space(4)
    table = DartsConvClassifier(list(DOMAINS), channels=8, num_nodes=4).param_table()
    target = 3000  # cell parameters; the stem and head (table.shared_params) come on top
    genotype, draws = random_matched_genotype(
        space, DOMAINS, table, target, np.random.default_rng(7), 0.02, 100_000
    )
    built = DartsConvClassifier(list(DOMAINS), channels=8, num_nodes=4, genotype=genotype)
    built_cells = sum(p.numel() for p in built.cell.parameters())
    assert built_cells == table.multimodel_cell_count(genotype)
    assert sum(p.numel() for p in built.parameters()) == table.shared_params + built_cells
    assert 0.98 * target <= built_cells <= target  # never larger than the target
    # a second path: draw with the same seed by hand until the built model's cells match
    rng = np.random.default_rng(7)
    for manual in itertools.count(1):  # noqa: B007 (read after the loop)
        g = random_genotype(space, DOMAINS, rng)
        cells = DartsConvClassifier(list(DOMAINS), channels=8, num_nodes=4, genotype=g).cell
        if 0.98 * target <= sum(p.numel() for p in cells.parameters()) <= target:
            break
    assert (manual, g) == (draws, genotype)
    assert draws > 1  # this seed and target need redraws, so the loop was exercised


def test_recurrent_match_is_exact_in_node_matrices():
    """The recurrent cell's modules are node matrices of 2H^2 (H = 4 here: 32 each), so a 2% match
    below the target is an exact one, whatever the target; the shared part does not count."""
    space = darts_rnn_space(8)
    names = ("en", "de")
    unit = 2 * 4 * 4
    table = uniform_param_table(
        space, {op: (0 if op == "none" else unit) for op in space.operations}, "node", 10_000
    )
    rng = np.random.default_rng(3)
    for modules in (9, 10, 11):
        genotype, _ = random_matched_genotype(space, names, table, modules * unit, rng)
        matrices = {(e.node, e.op) for d in names for e in genotype.cells[d]}  # by hand
        assert len(matrices) == modules
        assert table.multimodel_count(genotype) == 10_000 + modules * unit


def test_unmatched_target_names_target_tolerance_and_range():
    space = darts_cnn_space(4)
    table = DartsConvClassifier(list(DOMAINS), channels=8, num_nodes=4).param_table()
    rng = np.random.default_rng(0)
    counts = [table.multimodel_cell_count(random_genotype(space, DOMAINS, rng)) for _ in range(20)]
    with pytest.raises(DerivationError) as info:
        random_matched_genotype(space, DOMAINS, table, 100, np.random.default_rng(0), 0.02, 20)
    message = str(info.value)
    assert "target 100" in message and "2%" in message and "20 draw(s)" in message
    assert f"{min(counts)}..{max(counts)}" in message


def test_copied_sharing_reaches_a_search_that_shares_every_edge():
    """A search whose domains agree on every edge (the genre table's struct multimodel, seed 1)
    holds one node matrix per node (modules are (node, operation) here); independent draws for
    three domains never get there (the error says so and names the way out), copied draws do."""
    space = darts_rnn_space(6)
    names = ("gcc", "libreoffice", "wesnoth")
    unit = 2 * 4 * 4
    table = uniform_param_table(
        space, {op: (0 if op == "none" else unit) for op in space.operations}, "node", 10_000
    )
    one_cell = len(space.node_ids) * unit
    with pytest.raises(DerivationError, match="--random-sharing copied"):
        random_matched_genotype(space, names, table, one_cell, np.random.default_rng(0), 0.0, 2000)
    for seed in range(3):
        genotype, _ = random_matched_genotype(
            space, names, table, one_cell, np.random.default_rng(seed), 0.0, 2000, "copied"
        )
        MultiDomainGenotype(space, genotype.domains, genotype.cells)  # valid, by the validator
        assert table.multimodel_cell_count(genotype) == one_cell
        # by hand: at every node the three domains chose the same operation
        for j in space.node_ids:
            assert len({e.op for d in names for e in genotype.cells[d] if e.node == j}) == 1
    with pytest.raises(DerivationError, match="sharing 'shared': unknown"):
        random_matched_genotype(
            space, names, table, one_cell, np.random.default_rng(0), 0.0, 1, "shared"
        )


def test_copied_sharing_spans_independent_to_identical_cells():
    """The copy rate q is uniform in [0, 1] per draw: over many draws of two domains the fraction
    of nodes the second domain holds exactly as the first averages 1/2 plus the chance that a node
    drawn anew is equal (node j: 1/(4j), four operations; 0.102 over six nodes), and draws range
    from no node equal to all equal."""
    space = darts_rnn_space(6)
    names = ("en", "de")
    rng = np.random.default_rng(11)
    same = []
    for _ in range(400):
        g = random_copied_genotype(space, names, rng)
        equal = [
            sorted((e.input, e.op) for e in g.cells["en"] if e.node == j)
            == sorted((e.input, e.op) for e in g.cells["de"] if e.node == j)
            for j in space.node_ids
        ]
        same.append(np.mean(equal))
    chance = np.mean([1 / (4 * j) for j in space.node_ids])
    assert abs(float(np.mean(same)) - (0.5 + 0.5 * chance)) < 0.05
    assert min(same) == 0.0 and max(same) == 1.0
