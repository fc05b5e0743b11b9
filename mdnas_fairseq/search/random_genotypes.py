"""Random genotypes: the chance baseline of a search (does the search beat random cells?).

:func:`random_genotype` draws every cell uniformly among the valid cells of the search space: at
every node, ``edges_per_node`` distinct inputs uniformly among its incoming edges' states (all
earlier states in the DARTS DAG), each with an operation drawn uniformly among the non-``none``
operations its edge allows, independently for every node and
every cell name. Draws come from a ``numpy.random.Generator`` (``numpy.random.default_rng(seed)``),
in the order names, nodes, then inputs before operations, so a seed gives one genotype.

:func:`random_matched_genotype` redraws (from one generator) until the multimodel's parameter
count is within ``within`` (relative) of a target, e.g. the searched multimodel's count.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from .genotype import GenotypeEdge, MultiDomainGenotype
from .params import DerivationError, ParamTable
from .space import SearchSpace


def random_cell(space: SearchSpace, rng: np.random.Generator) -> Tuple[GenotypeEdge, ...]:
    """One uniformly random valid cell of ``space`` (inputs among a node's incoming edges, operations
    among those the edge allows; for the DARTS DAG, inputs among all earlier states, any operation)."""
    edges = []
    for j in space.node_ids:
        candidates = space.node_inputs(j)
        picked = rng.choice(len(candidates), size=space.edges_per_node, replace=False)
        for i in sorted(candidates[int(n)] for n in picked):
            ops = [op for op in space.allowed(space.edge_index(i, j)) if op != space.none_op]
            edges.append(GenotypeEdge(node=j, input=i, op=ops[int(rng.integers(len(ops)))]))
    return tuple(edges)


def random_genotype(
    space: SearchSpace, names: Sequence[str], rng: np.random.Generator
) -> MultiDomainGenotype:
    """One uniformly random cell per name (domain or shared architecture), drawn from ``rng``."""
    return MultiDomainGenotype(
        space, tuple(names), {name: random_cell(space, rng) for name in names}
    )


def random_matched_genotype(
    space: SearchSpace,
    names: Sequence[str],
    table: ParamTable,
    target: int,
    rng: np.random.Generator,
    within: float = 0.10,
    max_draws: int = 1000,
) -> Tuple[MultiDomainGenotype, int]:
    """The first random genotype whose multimodel count ``n`` has ``|n - target| <= within * target``.

    Returns ``(genotype, draws)``, ``draws`` counting the accepted one. Raises
    :class:`DerivationError` naming the target, the tolerance and the range of counts seen when none
    of ``max_draws`` draws matches.
    """
    if within < 0 or max_draws < 1:
        raise DerivationError(
            f"need within >= 0 and max_draws >= 1, got within={within}, max_draws={max_draws}"
        )
    low, high = None, None
    for draw in range(1, max_draws + 1):
        genotype = random_genotype(space, names, rng)
        count = table.multimodel_count(genotype)
        if abs(count - target) <= within * target:
            return genotype, draw
        low = count if low is None else min(low, count)
        high = count if high is None else max(high, count)
    raise DerivationError(
        f"no random genotype within {100 * within:g}% of the target {target} parameters "
        f"(allowed {target * (1 - within):.0f}..{target * (1 + within):.0f}) in {max_draws} draw(s); "
        f"the counts drawn ranged over {low}..{high}"
    )
