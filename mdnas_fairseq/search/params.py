"""Parameter tables: how many parameters a genotype's multimodel has, without the model or the data.

A :class:`ParamTable` says, for a search space,

* ``op_params[e][k]``: the parameters of the module of operation ``k`` on edge ``e`` (edges in the
  order of :attr:`SearchSpace.edges`; ``none`` always 0);
* ``module_sharing``: which chosen edges are one module. ``"edge"``: one module per
  (input, node, operation) (the conv cell); ``"node"``: one module per (node, operation) whatever
  the input state (the recurrent cell's matrix of a node's operation, ``rnn_share_key``);
* ``shared_params``: what every domain uses anyway (embeddings, output bias, first matrix; stem, head).

A genotype's multimodel holds ``shared_params`` plus one module per distinct sharing key among the
edges its domains chose (docs/method.md, section 4). Every key contains the node, so the count is a sum
over nodes of what the domains chose at that node (:meth:`ParamTable.node_params`): the greedy
budget derivation (:mod:`.budget`) relies on it. The table serialises to the ``param_table`` field of
genotype.json, so that ``mdnas-derive`` counts parameters of new genotypes without building models.

:meth:`ParamTable.expected_cell_params` is the differentiable expected size of one domain's cell
under softmax(alpha_d), the structure-complexity penalty of ``--param-coef``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Dict, Hashable, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from .genotype import Cell, GenotypeEdge, MultiDomainGenotype, multimodel_param_count
from .space import SearchSpace

MODULE_SHARING = ("edge", "node")
NodeChoice = Tuple[
    Tuple[int, str], ...
]  # the (input, op) pairs one domain keeps at one node, sorted


class DerivationError(ValueError):
    """A genotype cannot be derived as asked (budget too small, no random draw matched, bad table)."""


@dataclass(frozen=True)
class ParamTable:
    """Parameter counts of a search space's modules; see the module docstring."""

    space: SearchSpace
    op_params: Tuple[Tuple[int, ...], ...]
    module_sharing: str
    shared_params: int

    def __post_init__(self):
        space = self.space
        object.__setattr__(
            self, "op_params", tuple(tuple(int(c) for c in row) for row in self.op_params)
        )
        if self.module_sharing not in MODULE_SHARING:
            raise DerivationError(
                f"param table: module_sharing {self.module_sharing!r} is not one of {MODULE_SHARING}"
            )
        if len(self.op_params) != space.num_edges or any(
            len(r) != space.num_ops for r in self.op_params
        ):
            raise DerivationError(
                f"param table: op_params must be {space.num_edges} edges x {space.num_ops} operations of "
                f"search space {space.name!r}, got {[len(r) for r in self.op_params]}"
            )
        if any(c < 0 for row in self.op_params for c in row) or int(self.shared_params) < 0:
            raise DerivationError("param table: parameter counts must be >= 0")
        object.__setattr__(self, "shared_params", int(self.shared_params))
        if space.none_op in space.operations:
            none = space.op_index(space.none_op)
            if any(row[none] for row in self.op_params):
                raise DerivationError(
                    f"param table: operation {space.none_op!r} must have 0 parameters"
                )
        if self.module_sharing == "node":
            for j in space.node_ids:
                rows = {self.op_params[e] for e in range(space.num_edges)[space.node_edge_slice(j)]}
                if len(rows) != 1:
                    raise DerivationError(
                        f"param table: with module_sharing 'node' every input of node {j} shares one module per "
                        f"operation, so its edges must have equal counts, got {sorted(rows)}"
                    )

    # ------------------------------------------------------------------ modules
    def module_key(self, edge: GenotypeEdge) -> Hashable:
        """The key under which chosen edges are one module."""
        if self.module_sharing == "node":
            return (edge.node, edge.op)
        return (edge.input, edge.node, edge.op)

    def op_count(self, edge: GenotypeEdge) -> int:
        """Parameters of the module of ``edge``."""
        return self.op_params[self.space.edge_index(edge.input, edge.node)][
            self.space.op_index(edge.op)
        ]

    # ------------------------------------------------------------------ genotypes
    def multimodel_count(
        self, genotype: MultiDomainGenotype, domains: Optional[Iterable[str]] = None
    ) -> int:
        """Parameters of the concordant multimodel of ``genotype`` (or of the model of ``domains`` only)."""
        if genotype.space != self.space:
            raise DerivationError(
                f"genotype search space {genotype.space.to_dict()} differs from the table's"
            )
        return multimodel_param_count(
            genotype, self.op_count, self.shared_params, self.module_key, domains
        )

    def multimodel_cell_count(
        self, genotype: MultiDomainGenotype, domains: Optional[Iterable[str]] = None
    ) -> int:
        """The multimodel's parameters that depend on the genotype: its cells' distinct modules,
        without ``shared_params`` (what random baselines are matched on: the shared part, mostly
        embeddings, is the same for every genotype and would hide a difference in cell size)."""
        return self.multimodel_count(genotype, domains) - self.shared_params

    def param_counts(self, genotype: MultiDomainGenotype) -> Dict[str, Any]:
        """The ``param_counts`` field of genotype.json: every domain's model alone, the multimodel,
        and the multimodel's cell modules alone (``multimodel_cells``, see :meth:`multimodel_cell_count`)."""
        return {
            "domains": {d: self.multimodel_count(genotype, [d]) for d in genotype.domains},
            "multimodel": self.multimodel_count(genotype),
            "multimodel_cells": self.multimodel_cell_count(genotype),
        }

    def cell_count(self, cell: Iterable[GenotypeEdge]) -> int:
        """Parameters of one domain's cell (its distinct modules, without ``shared_params``)."""
        modules = {self.module_key(e): self.op_count(e) for e in cell}
        return sum(modules.values())

    def node_params(self, node: int, choices: Iterable[NodeChoice]) -> int:
        """Parameters at ``node`` of a multimodel whose domains keep ``choices`` there."""
        modules = {}
        for choice in choices:
            for i, op in choice:
                edge = GenotypeEdge(node=node, input=i, op=op)
                modules[self.module_key(edge)] = self.op_count(edge)
        return sum(modules.values())

    def shared_edges(self, genotype: MultiDomainGenotype) -> int:
        """Number of (domain, chosen edge) pairs whose module at least one other domain also uses."""
        users: Dict[Hashable, set] = {}
        for d in genotype.domains:
            for e in genotype.cells[d]:
                users.setdefault(self.module_key(e), set()).add(d)
        return sum(
            1
            for d in genotype.domains
            for e in genotype.cells[d]
            if len(users[self.module_key(e)]) > 1
        )

    # ------------------------------------------------------------------ extremes
    def node_choices(self, node: int) -> Iterator[NodeChoice]:
        """Every valid choice at ``node``: ``edges_per_node`` distinct inputs (among the node's
        incoming edges), each with a non-none op its edge allows (inputs in increasing combinations,
        operations in the space's order)."""
        space = self.space
        for inputs in itertools.combinations(space.node_inputs(node), space.edges_per_node):
            per_edge = [
                [op for op in space.allowed(space.edge_index(i, node)) if op != space.none_op]
                for i in inputs
            ]
            for chosen in itertools.product(*per_edge):
                yield tuple(zip(inputs, chosen))

    def cheapest_node_choice(self, node: int) -> Tuple[NodeChoice, int]:
        """The first valid choice at ``node`` with the fewest parameters, and its count."""
        return min(
            ((c, self.node_params(node, [c])) for c in self.node_choices(node)),
            key=lambda cp: cp[1],
        )

    def smallest_cell(self) -> int:
        """Parameters of the smallest valid cell (every node at its cheapest choice)."""
        return sum(self.cheapest_node_choice(j)[1] for j in self.space.node_ids)

    def largest_cell(self) -> int:
        """Parameters of the largest valid cell."""
        return sum(
            max(self.node_params(j, [c]) for c in self.node_choices(j)) for j in self.space.node_ids
        )

    def smallest_multimodel(self) -> int:
        """The smallest multimodel of any genotype: one cell of the cheapest choices shared by all domains."""
        return self.shared_params + self.smallest_cell()

    # ------------------------------------------------------------------ expected size
    def expected_cost_matrix(self) -> List[List[float]]:
        """(E, K): ``w_e * op_params[e][k]`` with ``w_e = edges_per_node / n_j`` for an edge into node j
        with ``n_j`` incoming edges (``n_j = j`` in the DARTS DAG).

        ``sum_{e,k} softmax(alpha_d)[e,k] * matrix[e][k]`` is the expected parameter count of a cell
        whose every node keeps ``edges_per_node`` of its ``n_j`` incoming edges drawn uniformly, each
        with an operation drawn from softmax(alpha_d(e)) (``none`` counts 0). With ``module_sharing``
        'node' and more than one edge per node it ignores two kept edges sharing a matrix.
        """
        space = self.space
        return [
            [space.edges_per_node / len(space.node_inputs(j)) * c for c in self.op_params[e]]
            for e, (_, j) in enumerate(space.edges)
        ]

    def expected_cell_params(self, probs: Tensor) -> Tensor:
        """Expected parameter count (float) of a domain's cell under ``probs`` = softmax(alpha_d).

        ``probs``: (..., E, K), e.g. (E, K) for one domain or (D, E, K) for all; returns (...,),
        differentiable with respect to ``probs``. Its maximum, every edge holding its most expensive
        operation, is :meth:`largest_cell` when an operation's count does not depend on the input
        (both DARTS cells); :class:`ParamPenalty` divides by that maximum.
        """
        matrix = torch.tensor(self.expected_cost_matrix(), dtype=probs.dtype, device=probs.device)
        return (probs * matrix).sum(dim=(-1, -2))

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> Dict[str, Any]:
        """The ``param_table`` field of genotype.json (its search space is the file's ``search_space``)."""
        return {
            "shared_params": self.shared_params,
            "module_sharing": self.module_sharing,
            "edges": [[i, j] for i, j in self.space.edges],
            "op_params": {
                op: [row[k] for row in self.op_params] for k, op in enumerate(self.space.operations)
            },
        }

    @classmethod
    def from_dict(cls, data: Any, space: SearchSpace, source: str = "param_table") -> ParamTable:
        """Parse :meth:`to_dict`'s structure for ``space``; errors name ``source`` and the field."""
        if not isinstance(data, dict):
            raise DerivationError(
                f"{source}: field 'param_table' must be an object, got {type(data).__name__}"
            )
        for key in ("shared_params", "module_sharing", "edges", "op_params"):
            if key not in data:
                raise DerivationError(f"{source}: field 'param_table' has no {key!r}")
        try:
            edges = [tuple(int(v) for v in e) for e in data["edges"]]
        except (TypeError, ValueError):
            edges = None
        if edges != space.edges:
            raise DerivationError(
                f"{source}: param_table.edges {data['edges']} are not the edges of search space {space.name!r}"
            )
        ops = data["op_params"]
        if not isinstance(ops, dict) or sorted(ops) != sorted(space.operations):
            raise DerivationError(
                f"{source}: param_table.op_params must map the operations {list(space.operations)} to counts per edge"
            )
        try:
            rows = [[int(ops[op][e]) for op in space.operations] for e in range(space.num_edges)]
            if any(len(ops[op]) != space.num_edges for op in space.operations):
                raise IndexError
            return cls(space, rows, str(data["module_sharing"]), int(data["shared_params"]))
        except (IndexError, TypeError, ValueError) as e:
            detail = f": {e}" if str(e) else ""
            raise DerivationError(
                f"{source}: bad param_table (op_params needs {space.num_edges} integer counts per operation){detail}"
            ) from None


def uniform_param_table(
    space: SearchSpace, op_counts: Dict[str, int], module_sharing: str, shared_params: int
) -> ParamTable:
    """A table whose operations cost the same on every edge (both DARTS cells): ``op_counts[op]``."""
    missing = [op for op in space.operations if op not in op_counts]
    if missing:
        raise DerivationError(f"param table: no count for operation(s) {missing}")
    row = [int(op_counts[op]) for op in space.operations]
    return ParamTable(space, [row] * space.num_edges, module_sharing, shared_params)


def cell_to_node_choices(cell: Cell, space: SearchSpace) -> Dict[int, NodeChoice]:
    """Node -> the sorted (input, op) pairs a cell keeps there."""
    out: Dict[int, List[Tuple[int, str]]] = {j: [] for j in space.node_ids}
    for e in cell:
        out[e.node].append((e.input, e.op))
    return {j: tuple(sorted(v)) for j, v in out.items()}


def node_choices_to_cell(choices: Dict[int, NodeChoice]) -> Cell:
    return tuple(
        sorted(GenotypeEdge(node=j, input=i, op=op) for j, c in choices.items() for i, op in c)
    )


class ParamPenalty:
    """``--param-coef``'s penalty: :meth:`ParamTable.expected_cell_params` divided by its maximum.

    Calling it on softmax(alpha) of shape (..., E, K) gives (...,) values in [0, 1] (one per domain
    for (D, E, K)), differentiable; the cost matrix is kept per device and dtype (no copy per call).
    All operations free of parameters make it 0.
    """

    def __init__(self, table: ParamTable):
        self.table = table
        matrix = torch.tensor(table.expected_cost_matrix(), dtype=torch.float64)
        top = float(matrix.max(dim=1).values.sum())
        self.normaliser = top
        self._matrix = matrix / top if top > 0 else matrix
        self._cache: Dict[Tuple[Any, Any], Tensor] = {}

    def __call__(self, probs: Tensor) -> Tensor:
        key = (probs.device, probs.dtype)
        if key not in self._cache:
            self._cache[key] = self._matrix.to(device=probs.device, dtype=probs.dtype)
        return (probs * self._cache[key]).sum(dim=(-1, -2))


def param_penalty(probs: Tensor, table: ParamTable) -> Tensor:
    """One-off :class:`ParamPenalty` of ``probs`` (..., E, K) -> (...,) in [0, 1]."""
    return ParamPenalty(table)(probs)
