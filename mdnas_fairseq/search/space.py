"""Search spaces: which states a cell has, which edges connect them, which operations an edge may hold.

A cell is a DAG over states ``0 .. num_states-1``. The first ``num_input_nodes`` states are the
cell's inputs (the RNN cell has one, the DARTS conv cell two); every later state ``j`` is an
intermediate node that sums operations applied to all earlier states: one edge ``(i, j)`` for
every ``i < j``. The architecture parameters of a cell are a tensor of shape (D, E, K):
D domains, E edges in the order of :attr:`SearchSpace.edges`, K candidate operations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple


@dataclass(frozen=True)
class SearchSpace:
    """The shape of a searchable cell.

    Attributes:
        name: identifier written into genotype files (``darts_rnn``, ``darts_cnn``, ...).
        operations: candidate operation names, index ``k`` of the last alpha axis.
        num_input_nodes: states that exist before the first intermediate node.
        num_nodes: intermediate nodes; node ids run from ``num_input_nodes``.
        edges_per_node: incoming edges every node keeps when a genotype is derived
            (DARTS: 1 for the recurrent cell, 2 for the conv cell).
        none_op: the operation meaning "no connection"; never chosen by derivation.
    """

    name: str
    operations: Tuple[str, ...]
    num_input_nodes: int
    num_nodes: int
    edges_per_node: int
    none_op: str = "none"

    def __post_init__(self):
        object.__setattr__(self, "operations", tuple(self.operations))
        if len(set(self.operations)) != len(self.operations):
            raise ValueError(f"search space {self.name!r}: duplicate operation names {self.operations}")
        if self.num_input_nodes < 1 or self.num_nodes < 1:
            raise ValueError(f"search space {self.name!r}: needs at least one input and one node")
        if not 1 <= self.edges_per_node <= self.num_input_nodes:
            # node j always has at least num_input_nodes incoming edges, so this many can be kept
            raise ValueError(
                f"search space {self.name!r}: edges_per_node={self.edges_per_node} must be between 1 "
                f"and num_input_nodes={self.num_input_nodes}"
            )
        if not [op for op in self.operations if op != self.none_op]:
            raise ValueError(f"search space {self.name!r}: needs an operation other than {self.none_op!r}")

    @property
    def node_ids(self) -> List[int]:
        return list(range(self.num_input_nodes, self.num_input_nodes + self.num_nodes))

    @property
    def num_states(self) -> int:
        return self.num_input_nodes + self.num_nodes

    @property
    def edges(self) -> List[Tuple[int, int]]:
        """All edges ``(i, j)``, grouped by node ``j`` and ordered by input ``i``."""
        return [(i, j) for j in self.node_ids for i in range(j)]

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_ops(self) -> int:
        return len(self.operations)

    def edge_index(self, i: int, j: int) -> int:
        """Position of edge (i, j) on the E axis of alpha."""
        if j not in self.node_ids or not 0 <= i < j:
            raise KeyError(f"search space {self.name!r} has no edge ({i}, {j})")
        first = self.num_input_nodes
        # nodes before j contribute first, first+1, ..., j-1 edges
        return sum(range(first, j)) + i

    def node_edge_slice(self, j: int) -> slice:
        """The slice of the E axis holding the incoming edges of node ``j``."""
        start = self.edge_index(0, j)
        return slice(start, start + j)

    def op_index(self, op: str) -> int:
        try:
            return self.operations.index(op)
        except ValueError:
            raise KeyError(f"unknown operation {op!r}; search space {self.name!r} has {list(self.operations)}")

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "operations": list(self.operations),
            "num_input_nodes": self.num_input_nodes,
            "num_nodes": self.num_nodes,
            "edges_per_node": self.edges_per_node,
            "none_op": self.none_op,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SearchSpace":
        return cls(
            name=str(d["name"]),
            operations=tuple(d["operations"]),
            num_input_nodes=int(d["num_input_nodes"]),
            num_nodes=int(d["num_nodes"]),
            edges_per_node=int(d["edges_per_node"]),
            none_op=str(d.get("none_op", "none")),
        )


RNN_OPERATIONS = ("none", "tanh", "relu", "sigmoid", "identity")
CNN_OPERATIONS = (
    "none",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "max_pool_3x3",
    "avg_pool_3x3",
)


def darts_rnn_space(num_nodes: int = 8) -> SearchSpace:
    """The DARTS recurrent cell: one input state, each node keeps its single best edge."""
    return SearchSpace("darts_rnn", RNN_OPERATIONS, num_input_nodes=1, num_nodes=num_nodes, edges_per_node=1)


def darts_cnn_space(num_nodes: int = 4) -> SearchSpace:
    """The DARTS conv cell: two input states, each node keeps its two best edges."""
    return SearchSpace("darts_cnn", CNN_OPERATIONS, num_input_nodes=2, num_nodes=num_nodes, edges_per_node=2)
