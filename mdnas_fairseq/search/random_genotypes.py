"""Random genotypes: the chance baseline of a search (does the search beat random cells?).

:func:`random_genotype` draws every cell uniformly among the valid cells of the search space: at
every node, ``edges_per_node`` distinct inputs uniformly among its incoming edges' states (all
earlier states in the DARTS DAG), each with an operation drawn uniformly among the non-``none``
operations its edge allows, independently for every node and
every cell name. Draws come from a ``numpy.random.Generator`` (``numpy.random.default_rng(seed)``),
in the order names, nodes, then inputs before operations, so a seed gives one genotype.

Independent cells almost never agree, so a multimodel drawn that way is nearly as large as one
without sharing. :func:`random_copied_genotype` draws the sharing too: a copy rate ``q`` uniform
in [0, 1], the first name's cell uniformly random, and every later name's node, with probability
``q``, the same node (inputs and operations) of a uniformly chosen earlier name, else a uniformly
random node. ``q = 1`` gives one cell for all names; a matched draw can then reach the size of a
search whose domains agree on everything, which independent draws cannot.

:func:`random_matched_genotype` redraws (from one generator) until the multimodel's cell parameters
(those that depend on the genotype) are within ``within`` (relative) below a target, e.g. the
searched multimodel's: a baseline that is never larger than what it is compared with.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from .genotype import GenotypeEdge, MultiDomainGenotype
from .params import DerivationError, ParamTable
from .space import SearchSpace


def random_node(space: SearchSpace, j: int, rng: np.random.Generator) -> List[GenotypeEdge]:
    """Node ``j``'s kept edges, uniformly random: inputs among its incoming edges, operations among
    those each edge allows (for the DARTS DAG: inputs among all earlier states, any operation)."""
    candidates = space.node_inputs(j)
    picked = rng.choice(len(candidates), size=space.edges_per_node, replace=False)
    edges = []
    for i in sorted(candidates[int(n)] for n in picked):
        ops = [op for op in space.allowed(space.edge_index(i, j)) if op != space.none_op]
        edges.append(GenotypeEdge(node=j, input=i, op=ops[int(rng.integers(len(ops)))]))
    return edges


def random_cell(space: SearchSpace, rng: np.random.Generator) -> Tuple[GenotypeEdge, ...]:
    """One uniformly random valid cell of ``space``, node by node (:func:`random_node`)."""
    return tuple(e for j in space.node_ids for e in random_node(space, j, rng))


def random_genotype(
    space: SearchSpace, names: Sequence[str], rng: np.random.Generator
) -> MultiDomainGenotype:
    """One uniformly random cell per name (domain or shared architecture), drawn from ``rng``."""
    return MultiDomainGenotype(
        space, tuple(names), {name: random_cell(space, rng) for name in names}
    )


def random_copied_genotype(
    space: SearchSpace, names: Sequence[str], rng: np.random.Generator
) -> MultiDomainGenotype:
    """A random genotype with a random amount of sharing (the module's docstring): ``q`` uniform in
    [0, 1]; the first name's nodes uniformly random; each later name's node copied with probability
    ``q`` from a uniformly chosen earlier name, else drawn uniformly."""
    q = float(rng.random())
    nodes: Dict[str, Dict[int, List[GenotypeEdge]]] = {}
    for k, name in enumerate(names):
        nodes[name] = {}
        for j in space.node_ids:
            if k > 0 and rng.random() < q:
                nodes[name][j] = nodes[names[int(rng.integers(k))]][j]
            else:
                nodes[name][j] = random_node(space, j, rng)
    cells = {name: tuple(e for j in space.node_ids for e in nodes[name][j]) for name in names}
    return MultiDomainGenotype(space, tuple(names), cells)


# How the names' cells of a random genotype relate (mdnas-derive --random-sharing).
SHARING = {"independent": random_genotype, "copied": random_copied_genotype}


def sharing_draw(sharing: str):
    """The drawing function of ``sharing`` (a key of :data:`SHARING`), else a DerivationError."""
    if sharing not in SHARING:
        raise DerivationError(f"sharing {sharing!r}: unknown (known: {', '.join(SHARING)})")
    return SHARING[sharing]


MATCH_TOLERANCE = 0.02  # relative, below the target only
MATCH_MAX_DRAWS = 200_000


def random_matched_genotype(
    space: SearchSpace,
    names: Sequence[str],
    table: ParamTable,
    target: int,
    rng: np.random.Generator,
    within: float = MATCH_TOLERANCE,
    max_draws: int = MATCH_MAX_DRAWS,
    sharing: str = "independent",
) -> Tuple[MultiDomainGenotype, int]:
    """The first random genotype whose cell parameters ``n`` (:meth:`ParamTable.multimodel_cell_count`,
    what depends on the genotype) satisfy ``(1 - within) * target <= n <= target``.

    Matching the cells, not the total, is what makes the baseline fair: the shared part (embeddings,
    output bias; stem and head) is the same for every genotype and can be most of the total. Never
    above the target, so the random multimodels are never larger than the searched one; where the
    space's modules come in large equal units (the recurrent cell's node matrices, 2H^2 each),
    ``within`` below one unit makes the match exact. Returns ``(genotype, draws)``, ``draws``
    counting the accepted one. ``sharing`` (a key of :data:`SHARING`) picks the drawing. Raises
    :class:`DerivationError` naming the target, the tolerance and the range of counts seen when none
    of ``max_draws`` draws matches.
    """
    draw_genotype = sharing_draw(sharing)
    if not 0 <= within < 1 or max_draws < 1:
        raise DerivationError(
            f"need 0 <= within < 1 and max_draws >= 1, got within={within}, max_draws={max_draws}"
        )
    low_bound = target * (1 - within)
    low, high = None, None
    for draw in range(1, max_draws + 1):
        genotype = draw_genotype(space, names, rng)
        count = table.multimodel_cell_count(genotype)
        if low_bound <= count <= target:
            return genotype, draw
        low = count if low is None else min(low, count)
        high = count if high is None else max(high, count)
    raise DerivationError(
        f"no random genotype with cell parameters within {100 * within:g}% below the target {target} "
        f"(allowed {low_bound:.0f}..{target}) in {max_draws} draw(s); "
        f"the cell counts drawn ranged over {low}..{high}"
        + (
            "; independent cells rarely agree, --random-sharing copied draws the sharing too"
            if sharing == "independent"
            else ""
        )
    )
