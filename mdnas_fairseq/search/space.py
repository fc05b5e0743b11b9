"""Search spaces: which states a cell has, which edges connect them, which operations an edge may hold.

A cell is a DAG over states ``0 .. num_states-1``. The first ``num_input_nodes`` states are the
cell's inputs (the RNN cell has one, the DARTS conv cell two); every later state ``j`` is an
intermediate node that sums operations applied to earlier states. By default (DARTS) there is one
edge ``(i, j)`` for every ``i < j``; a space may instead list its edges (``topology``, e.g. a
chain of slots with one edge each) and restrict the operations of each edge (``allowed_ops``,
e.g. token-mixing operations on one kind of slot, channel-mixing ones on another). The
architecture parameters of a cell are a tensor of shape (D, E, K): D domains, E edges in the
order of :attr:`SearchSpace.edges`, K candidate operations (shared by every edge; an operation an
edge does not allow gets weight 0 and is never derived, see :meth:`SearchSpace.allowed_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple


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
        topology: the edges ``(i, j)``, grouped by node ``j`` and ordered by input ``i``; None (the
            default, DARTS) for every ``(i, j)`` with ``i < j``.
        allowed_ops: for every edge (in the order of :attr:`edges`) the operations it may hold;
            None (the default) allows every operation on every edge.
    """

    name: str
    operations: Tuple[str, ...]
    num_input_nodes: int
    num_nodes: int
    edges_per_node: int
    none_op: str = "none"
    topology: Optional[Tuple[Tuple[int, int], ...]] = None
    allowed_ops: Optional[Tuple[Tuple[str, ...], ...]] = None

    def __post_init__(self):
        object.__setattr__(self, "operations", tuple(self.operations))
        if self.topology is not None:
            object.__setattr__(self, "topology", tuple((int(i), int(j)) for i, j in self.topology))
        if self.allowed_ops is not None:
            object.__setattr__(self, "allowed_ops", tuple(tuple(ops) for ops in self.allowed_ops))
        if len(set(self.operations)) != len(self.operations):
            raise ValueError(
                f"search space {self.name!r}: duplicate operation names {self.operations}"
            )
        if self.num_input_nodes < 1 or self.num_nodes < 1:
            raise ValueError(f"search space {self.name!r}: needs at least one input and one node")
        if not [op for op in self.operations if op != self.none_op]:
            raise ValueError(
                f"search space {self.name!r}: needs an operation other than {self.none_op!r}"
            )
        if self.topology is None:
            # node j has at least num_input_nodes incoming edges, so this many can be kept
            fewest, where = self.num_input_nodes, f"num_input_nodes={self.num_input_nodes}"
        else:
            self._check_topology()
            fewest = min(len(self.node_inputs(j)) for j in self.node_ids)
            where = f"the {fewest} incoming edge(s) of its sparsest node"
        if not 1 <= self.edges_per_node <= fewest:
            raise ValueError(
                f"search space {self.name!r}: edges_per_node={self.edges_per_node} must be between 1 and {where}"
            )
        if self.allowed_ops is not None:
            self._check_allowed_ops()

    def _check_topology(self) -> None:
        edges = self.topology
        for i, j in edges:
            if j not in self.node_ids or not 0 <= i < j:
                raise ValueError(
                    f"search space {self.name!r}: topology edge ({i}, {j}) must go from an earlier state to a "
                    f"node {self.node_ids[0]}..{self.node_ids[-1]}"
                )
        if list(edges) != sorted(set(edges), key=lambda e: (e[1], e[0])):
            raise ValueError(
                f"search space {self.name!r}: topology edges must be distinct, grouped by node and ordered by "
                f"input, got {list(edges)}"
            )
        bare = [j for j in self.node_ids if not any(e[1] == j for e in edges)]
        if bare:
            raise ValueError(
                f"search space {self.name!r}: node(s) {bare} have no incoming edge in the topology"
            )

    def _check_allowed_ops(self) -> None:
        if len(self.allowed_ops) != self.num_edges:
            raise ValueError(
                f"search space {self.name!r}: allowed_ops lists {len(self.allowed_ops)} edge(s), "
                f"the space has {self.num_edges}"
            )
        for (i, j), ops in zip(self.edges, self.allowed_ops):
            unknown = [op for op in ops if op not in self.operations]
            if unknown or len(set(ops)) != len(ops):
                raise ValueError(
                    f"search space {self.name!r}: edge {i}->{j} allows {list(ops)}: unknown or repeated "
                    f"operations (the space has {list(self.operations)})"
                )
            if not [op for op in ops if op != self.none_op]:
                raise ValueError(
                    f"search space {self.name!r}: edge {i}->{j} must allow an operation other than {self.none_op!r}"
                )

    @property
    def node_ids(self) -> List[int]:
        return list(range(self.num_input_nodes, self.num_input_nodes + self.num_nodes))

    @property
    def num_states(self) -> int:
        return self.num_input_nodes + self.num_nodes

    @property
    def edges(self) -> List[Tuple[int, int]]:
        """All edges ``(i, j)``, grouped by node ``j`` and ordered by input ``i``."""
        if self.topology is not None:
            return list(self.topology)
        return [(i, j) for j in self.node_ids for i in range(j)]

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_ops(self) -> int:
        return len(self.operations)

    def edge_index(self, i: int, j: int) -> int:
        """Position of edge (i, j) on the E axis of alpha."""
        if self.topology is not None:
            try:
                return self.topology.index((i, j))
            except ValueError:
                raise KeyError(f"search space {self.name!r} has no edge ({i}, {j})") from None
        if j not in self.node_ids or not 0 <= i < j:
            raise KeyError(f"search space {self.name!r} has no edge ({i}, {j})")
        first = self.num_input_nodes
        # nodes before j contribute first, first+1, ..., j-1 edges
        return sum(range(first, j)) + i

    def node_inputs(self, j: int) -> List[int]:
        """The states ``i`` with an edge ``(i, j)``, in edge order."""
        if j not in self.node_ids:
            raise KeyError(f"search space {self.name!r} has no node {j}")
        return [i for i, node in self.edges if node == j]

    def node_edge_slice(self, j: int) -> slice:
        """The slice of the E axis holding the incoming edges of node ``j`` (contiguous by construction)."""
        inputs = self.node_inputs(j)
        start = self.edge_index(inputs[0], j)
        return slice(start, start + len(inputs))

    @property
    def output_nodes(self) -> List[int]:
        """The nodes the cell output combines: every node for the full DAG (the RNN cell averages them,
        the conv cell concatenates them), the nodes no edge leaves for an explicit topology (the last
        node of a chain)."""
        if self.topology is None:
            return self.node_ids
        used = {i for i, _ in self.topology}
        return [j for j in self.node_ids if j not in used]

    def allowed(self, edge: int) -> Tuple[str, ...]:
        """The operations edge number ``edge`` may hold."""
        return self.operations if self.allowed_ops is None else self.allowed_ops[edge]

    def allowed_mask(self) -> List[List[bool]]:
        """(E, K) booleans: may edge e hold operation k? Mixing gives a disallowed operation weight 0."""
        return [[op in self.allowed(e) for op in self.operations] for e in range(self.num_edges)]

    def op_index(self, op: str) -> int:
        try:
            return self.operations.index(op)
        except ValueError:
            raise KeyError(
                f"unknown operation {op!r}; search space {self.name!r} has {list(self.operations)}"
            ) from None

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form; ``topology`` and ``allowed_ops`` only when set, so DARTS spaces keep the old form."""
        d: Dict[str, Any] = {
            "name": self.name,
            "operations": list(self.operations),
            "num_input_nodes": self.num_input_nodes,
            "num_nodes": self.num_nodes,
            "edges_per_node": self.edges_per_node,
            "none_op": self.none_op,
        }
        if self.topology is not None:
            d["topology"] = [[i, j] for i, j in self.topology]
        if self.allowed_ops is not None:
            d["allowed_ops"] = [list(ops) for ops in self.allowed_ops]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> SearchSpace:
        topology = d.get("topology")
        allowed = d.get("allowed_ops")
        return cls(
            name=str(d["name"]),
            operations=tuple(d["operations"]),
            num_input_nodes=int(d["num_input_nodes"]),
            num_nodes=int(d["num_nodes"]),
            edges_per_node=int(d["edges_per_node"]),
            none_op=str(d.get("none_op", "none")),
            topology=None if topology is None else tuple((int(e[0]), int(e[1])) for e in topology),
            allowed_ops=None
            if allowed is None
            else tuple(tuple(str(op) for op in ops) for ops in allowed),
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
    return SearchSpace(
        "darts_rnn", RNN_OPERATIONS, num_input_nodes=1, num_nodes=num_nodes, edges_per_node=1
    )


def darts_cnn_space(num_nodes: int = 4) -> SearchSpace:
    """The DARTS conv cell: two input states, each node keeps its two best edges."""
    return SearchSpace(
        "darts_cnn", CNN_OPERATIONS, num_input_nodes=2, num_nodes=num_nodes, edges_per_node=2
    )


def transformer_token_ops(kernel_sizes: Sequence[int] = (3, 7)) -> Tuple[str, ...]:
    """Token-mixing candidates: causal self-attention, causal lightweight and depthwise convolutions."""
    sizes = [int(k) for k in kernel_sizes]
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise ValueError(
            f"convolution kernel sizes must be distinct positive integers, got {list(kernel_sizes)}"
        )
    return (
        ("none", "identity", "attention")
        + tuple(f"lightconv_{k}" for k in sizes)
        + tuple(f"dwconv_{k}" for k in sizes)
    )


TRANSFORMER_CHANNEL_OPS = ("none", "identity", "ffn_relu", "ffn_gelu", "ffn_sqrelu")


def transformer_lm_space(num_layers: int, kernel_sizes: Sequence[int] = (3, 7)) -> SearchSpace:
    """The searchable Transformer LM: a chain of 2 slots per layer (see ``cells/transformer.py``).

    State 0 is the embedding; node ``2l + 1`` is layer l's token-mixing slot, node ``2l + 2`` its
    channel-mixing slot, each with one edge from the previous state. K is the union of both
    slots' candidates; ``allowed_ops`` restricts every edge to its slot's candidates.
    """
    if num_layers < 1:
        raise ValueError(f"a Transformer needs at least one layer, got {num_layers}")
    token, channel = transformer_token_ops(kernel_sizes), TRANSFORMER_CHANNEL_OPS
    operations = token + tuple(op for op in channel if op not in token)
    num_nodes = 2 * num_layers
    return SearchSpace(
        "transformer_lm",
        operations,
        num_input_nodes=1,
        num_nodes=num_nodes,
        edges_per_node=1,
        topology=tuple((j - 1, j) for j in range(1, num_nodes + 1)),
        allowed_ops=tuple(token if j % 2 == 1 else channel for j in range(1, num_nodes + 1)),
    )
