"""A parameter budget from one search: the concordant multimodel with at most N parameters.

The rule (``BUDGET_RULE``, also printed by ``mdnas-derive --help``) is a deterministic greedy
sequence of moves from the per-domain argmax genotype; every move strictly lowers the multimodel's
parameter count, and a budget N takes the first genotype of the sequence with at most N
parameters. A smaller budget therefore takes a later genotype of the same sequence: never more
parameters, never fewer shared edges (:meth:`ParamTable.shared_edges`: every move makes the
edge it sets shared and unshares none). ``P_d(i->j, op)`` is the softmax(alpha_d) weight of
``op`` on edge ``(i, j)``, the weight DARTS derivation ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .genotype import GenotypeEdge, MultiDomainGenotype, derive_cell
from .params import (
    DerivationError,
    NodeChoice,
    ParamTable,
    cell_to_node_choices,
    node_choices_to_cell,
)
from .space import SearchSpace

BUDGET_RULE = """\
Budget rule. Start from every domain's own argmax genotype (the search's genotype). While the
multimodel has more than N parameters, apply the first applicable of:
  1. a MERGE: one domain d, at one node j, replaces one of its kept edges (i, op) by an edge
     (i', op') whose module another domain already uses at node j (the same (input, node, op) for
     the conv cell; the same (node, op), any input, for the recurrent cell), keeping its inputs
     distinct. Parameters saved: the old module's count if no domain uses it any more, else 0
     (merges saving nothing are skipped). Cost: the architecture probability d loses,
     P_d(i->j, op) - P_d(i'->j, op'), where P_d(i->j, op) is the weight of op on edge (i, j) in
     softmax(alpha_d), read from genotype.json's 'alpha'.
  2. only when no merge saves parameters, a NODE MOVE: every domain takes the same choice X at
     node j (any valid choice: edges_per_node distinct inputs, non-none operations). Saved: node
     j's parameters before minus those of X; cost: the sum over domains of the P_d weights of
     their kept edges at node j minus those of X.
Among the candidates of the step's kind, take the smallest cost / parameters saved; ties go to
the larger saving, then, for merges, the earlier domain (genotype order), node, replaced edge and
new edge (input, then operation in search-space order); for node moves, the earlier node, then X
in enumeration order (input combinations ascending, then operations in search-space order).
Every move lowers the count, so a smaller budget never gives more parameters. With two or more
domains every move makes the edges it sets shared and unshares none, so a smaller budget never
gives fewer shared edges ((domain, kept edge) pairs whose module another domain also uses). Node
moves continue until every node costs no more than its cheapest choice, so any budget down to the
smallest multimodel (one cell of the cheapest valid operations shared by all domains, plus the
parameters every domain uses) is reached; a smaller budget is an error naming that size."""


@dataclass(frozen=True)
class BudgetStep:
    """One move of the budget sequence."""

    kind: str  # "merge" or "node"
    node: int
    domains: Tuple[str, ...]  # the domains whose choice at ``node`` changed
    before: Dict[str, NodeChoice]  # their choices before
    after: NodeChoice  # their (common) choice after
    probability_cost: float
    params_saved: int
    params_after: int

    def to_dict(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "node": self.node,
            "domains": list(self.domains),
            "before": {d: [[i, op] for i, op in c] for d, c in self.before.items()},
            "after": [[i, op] for i, op in self.after],
            "probability_cost": self.probability_cost,
            "params_saved": self.params_saved,
            "params_after": self.params_after,
        }


def _as_probs(probs: Any, space: SearchSpace, num_domains: int) -> np.ndarray:
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().double().numpy()
    array = np.asarray(probs, dtype=np.float64)
    if array.shape != (num_domains, space.num_edges, space.num_ops):
        raise DerivationError(
            f"softmax(alpha) of shape {array.shape} does not match {num_domains} domain(s) x {space.num_edges} "
            f"edges x {space.num_ops} operations of search space {space.name!r}"
        )
    if not np.isfinite(array).all():
        raise DerivationError("softmax(alpha) holds non-finite values")
    return array


class _State:
    """Node choices of every domain, with the helpers the rule needs."""

    def __init__(self, genotype: MultiDomainGenotype, probs: np.ndarray, table: ParamTable):
        self.table, self.space, self.probs = table, table.space, probs
        self.domains = list(genotype.domains)
        self.choices = {
            d: cell_to_node_choices(genotype.cells[d], self.space) for d in self.domains
        }

    def weight(self, d: int, node: int, choice: Sequence[Tuple[int, str]]) -> float:
        return float(
            sum(
                self.probs[d, self.space.edge_index(i, node), self.space.op_index(op)]
                for i, op in choice
            )
        )

    def node_params(self, node: int, replace: Optional[Dict[str, NodeChoice]] = None) -> int:
        replace = replace or {}
        return self.table.node_params(
            node, [replace.get(d, self.choices[d][node]) for d in self.domains]
        )

    def count(self) -> int:
        return self.table.shared_params + sum(self.node_params(j) for j in self.space.node_ids)

    def genotype(self) -> MultiDomainGenotype:
        return MultiDomainGenotype(
            self.space,
            tuple(self.domains),
            {d: node_choices_to_cell(self.choices[d]) for d in self.domains},
        )

    def _module(self, node: int, edge: Tuple[int, str]):
        return self.table.module_key(GenotypeEdge(node=node, input=edge[0], op=edge[1]))

    def merges(self) -> Iterator[Tuple[tuple, BudgetStep]]:
        ops = list(self.space.operations)
        for di, d in enumerate(self.domains):
            for j in self.space.node_ids:
                own = self.choices[d][j]
                others = {
                    self._module(j, e)
                    for d2 in self.domains
                    if d2 != d
                    for e in self.choices[d2][j]
                }
                new_edges = [
                    (i, op)
                    for i in range(j)
                    for op in ops
                    if op != self.space.none_op and self._module(j, (i, op)) in others
                ]
                before = self.node_params(j)
                for old in own:
                    rest = [e for e in own if e != old]
                    for new in new_edges:
                        if new == old or new[0] in {i for i, _ in rest}:
                            continue
                        choice = tuple(sorted(rest + [new]))
                        saved = before - self.node_params(j, {d: choice})
                        if saved <= 0:
                            continue
                        cost = self.weight(di, j, [old]) - self.weight(di, j, [new])
                        key = (
                            cost / saved,
                            -saved,
                            di,
                            j,
                            old[0],
                            ops.index(old[1]),
                            new[0],
                            ops.index(new[1]),
                        )
                        yield key, BudgetStep("merge", j, (d,), {d: own}, choice, cost, saved, 0)

    def node_moves(self) -> Iterator[Tuple[tuple, BudgetStep]]:
        for j in self.space.node_ids:
            before = self.node_params(j)
            current = {d: self.choices[d][j] for d in self.domains}
            held = sum(self.weight(di, j, current[d]) for di, d in enumerate(self.domains))
            for rank, choice in enumerate(self.table.node_choices(j)):
                saved = before - self.table.node_params(j, [choice])
                if saved <= 0:
                    continue
                cost = held - sum(self.weight(di, j, choice) for di in range(len(self.domains)))
                changed = tuple(d for d in self.domains if current[d] != choice)
                step = BudgetStep(
                    "node", j, changed, {d: current[d] for d in changed}, choice, cost, saved, 0
                )
                yield (cost / saved, -saved, j, rank), step

    def apply(self, step: BudgetStep) -> BudgetStep:
        for d in step.domains:
            self.choices[d][step.node] = step.after
        return BudgetStep(
            step.kind,
            step.node,
            step.domains,
            step.before,
            step.after,
            step.probability_cost,
            step.params_saved,
            self.count(),
        )


def argmax_genotype(probs: Any, space: SearchSpace, names: Sequence[str]) -> MultiDomainGenotype:
    """Every name's DARTS argmax cell of ``probs`` = softmax(alpha) (D, E, K)."""
    array = _as_probs(probs, space, len(names))
    return MultiDomainGenotype(
        space,
        tuple(names),
        {n: derive_cell(torch.from_numpy(array[k]), space) for k, n in enumerate(names)},
    )


def budget_sequence(
    probs: Any, table: ParamTable, names: Sequence[str], start: Optional[MultiDomainGenotype] = None
) -> Iterator[Tuple[BudgetStep, MultiDomainGenotype]]:
    """The moves of :data:`BUDGET_RULE` from ``start`` (default: the argmax genotype), each with the
    genotype after it, until no move lowers the count (the smallest multimodel)."""
    array = _as_probs(probs, table.space, len(names))
    genotype = start if start is not None else argmax_genotype(array, table.space, names)
    if list(genotype.domains) != list(names) or genotype.space != table.space:
        raise DerivationError(
            f"start genotype for {list(genotype.domains)} does not fit {list(names)} and the table"
        )
    state = _State(genotype, array, table)
    while True:
        best = min(state.merges(), key=lambda ks: ks[0], default=None)
        if best is None:
            best = min(state.node_moves(), key=lambda ks: ks[0], default=None)
        if best is None:
            return
        step = state.apply(best[1])
        yield step, state.genotype()


def derive_with_budget(
    probs: Any,
    table: ParamTable,
    names: Sequence[str],
    budget: int,
    start: Optional[MultiDomainGenotype] = None,
) -> Tuple[MultiDomainGenotype, List[BudgetStep]]:
    """The first genotype of :func:`budget_sequence` whose multimodel has at most ``budget``
    parameters, and the moves taken. A budget below :meth:`ParamTable.smallest_multimodel` is a
    :class:`DerivationError` naming the smallest possible size."""
    smallest = table.smallest_multimodel()
    if budget < smallest:
        raise DerivationError(
            f"parameter budget {budget} is below the smallest possible multimodel, {smallest} parameters "
            f"(one cell of the cheapest valid operations, {table.smallest_cell()}, shared by all domains, plus "
            f"{table.shared_params} parameters every domain uses)"
        )
    array = _as_probs(probs, table.space, len(names))
    genotype = start if start is not None else argmax_genotype(array, table.space, names)
    steps: List[BudgetStep] = []
    if table.multimodel_count(genotype) <= budget:
        return genotype, steps
    for step, reduced in budget_sequence(array, table, names, genotype):
        steps.append(step)
        if step.params_after <= budget:
            return reduced, steps
    raise AssertionError(
        "the budget sequence ended above the smallest multimodel"
    )  # pragma: no cover
