"""Genotypes: the discrete architectures derived from alpha, their concordant union, and files.

* :func:`derive_genotype` turns alpha (D, E, K) into one cell per domain: every node keeps the
  ``edges_per_node`` incoming edges whose strongest non-``none`` operation has the largest
  softmax weight, each with that operation (DARTS' rule; ``none`` is never chosen, nor an
  operation the edge does not allow, see :meth:`SearchSpace.allowed`).
* :meth:`MultiDomainGenotype.union` is the concordant multimodel of docs/method.md, section 4: on each
  edge the set of operations chosen by some domain, each with the domains that use it.
* :func:`multimodel_param_count` counts the parameters of the multimodel built from a genotype,
  given the parameter count of one operation module and the key under which modules are shared.
* :func:`save_genotype` / :func:`load_genotype` read and write the versioned JSON format
  (``format: mdnas-genotype``, ``version: 1``); writes are atomic and the loader rejects bad
  files with a :class:`GenotypeError` naming the file and the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .atomic import atomic_write_text
from .space import SearchSpace

GENOTYPE_FORMAT = "mdnas-genotype"
GENOTYPE_VERSION = 1


class GenotypeError(ValueError):
    """A genotype (file) that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, order=True)
class GenotypeEdge:
    """Node ``node`` applies operation ``op`` to state ``input``."""

    node: int
    input: int
    op: str

    def to_dict(self) -> Dict[str, Any]:
        return {"node": self.node, "input": self.input, "op": self.op}


Cell = Tuple[GenotypeEdge, ...]


@dataclass(frozen=True)
class MultiDomainGenotype:
    """One derived cell per domain over a common search space."""

    space: SearchSpace
    domains: Tuple[str, ...]
    cells: Dict[str, Cell]

    def __post_init__(self):
        object.__setattr__(self, "domains", tuple(self.domains))
        object.__setattr__(self, "cells", {d: tuple(sorted(self.cells[d])) for d in self.cells})
        _validate(self, source="genotype")

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def union(self) -> Dict[Tuple[int, int], Dict[str, Tuple[str, ...]]]:
        """Edge ``(input, node)`` -> operation -> the domains that chose it (the concordant union)."""
        out: Dict[Tuple[int, int], Dict[str, List[str]]] = {}
        for domain in self.domains:
            for e in self.cells[domain]:
                out.setdefault((e.input, e.node), {}).setdefault(e.op, []).append(domain)
        return {
            edge: {op: tuple(ds) for op, ds in sorted(ops.items())}
            for edge, ops in sorted(out.items())
        }

    def union_edges(self) -> List[GenotypeEdge]:
        """Every distinct (node, input, op) of the union, sorted."""
        return sorted({e for cell in self.cells.values() for e in cell})

    def agreement(self) -> float:
        """Share of the union's edges on which every domain chose the same single operation."""
        union = self.union()
        if not union:
            return 1.0
        agreed = sum(
            1
            for ops in union.values()
            if len(ops) == 1 and len(next(iter(ops.values()))) == self.num_domains
        )
        return agreed / len(union)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": GENOTYPE_FORMAT,
            "version": GENOTYPE_VERSION,
            "search_space": self.space.to_dict(),
            "domains": list(self.domains),
            "cells": {d: [e.to_dict() for e in self.cells[d]] for d in self.domains},
            "union": [
                {"input": i, "node": j, "op": op, "domains": list(ds)}
                for (i, j), ops in self.union().items()
                for op, ds in ops.items()
            ],
        }


def _validate(genotype: MultiDomainGenotype, source: str) -> None:
    space = genotype.space
    if not genotype.domains:
        raise GenotypeError(f"{source}: no domains")
    if len(set(genotype.domains)) != len(genotype.domains):
        raise GenotypeError(f"{source}: duplicate domain names {list(genotype.domains)}")
    if set(genotype.cells) != set(genotype.domains):
        raise GenotypeError(
            f"{source}: cells are given for domains {sorted(genotype.cells)} but the domains are "
            f"{list(genotype.domains)}"
        )
    for domain in genotype.domains:
        per_node: Dict[int, List[GenotypeEdge]] = {}
        for e in genotype.cells[domain]:
            if e.op not in space.operations or e.op == space.none_op:
                raise GenotypeError(
                    f"{source}: domain {domain!r}: unknown operation {e.op!r} "
                    f"(search space {space.name!r} allows {[o for o in space.operations if o != space.none_op]})"
                )
            try:
                index = space.edge_index(e.input, e.node)
            except KeyError:
                nodes = f"nodes {space.node_ids[0]}..{space.node_ids[-1]}"
                raise GenotypeError(
                    f"{source}: domain {domain!r}: edge from state {e.input} to node {e.node} does not exist in "
                    f"search space {space.name!r} ({nodes})"
                ) from None
            if e.op not in space.allowed(index):
                allowed = [o for o in space.allowed(index) if o != space.none_op]
                raise GenotypeError(
                    f"{source}: domain {domain!r}: operation {e.op!r} is not allowed on edge {e.input}->{e.node} "
                    f"of search space {space.name!r} (allowed: {allowed})"
                )
            per_node.setdefault(e.node, []).append(e)
        for j in space.node_ids:
            edges = per_node.get(j, [])
            if len(edges) != space.edges_per_node or len({e.input for e in edges}) != len(edges):
                raise GenotypeError(
                    f"{source}: domain {domain!r}: node {j} has {len(edges)} incoming edge(s) "
                    f"{[(e.input, e.op) for e in edges]}, expected {space.edges_per_node} from distinct states"
                )


def derive_cell(probs: Tensor, space: SearchSpace) -> Cell:
    """DARTS derivation for one architecture from its mixing probabilities (E, K)."""
    if tuple(probs.shape) != (space.num_edges, space.num_ops):
        raise GenotypeError(
            f"mixing probabilities of shape {tuple(probs.shape)} do not match search space {space.name!r} "
            f"({space.num_edges} edges x {space.num_ops} operations)"
        )
    w = probs.detach().double().clone()
    # never `none`, never an operation the edge does not allow
    w[~torch.tensor(space.allowed_mask(), dtype=torch.bool, device=w.device)] = float("-inf")
    if space.none_op in space.operations:
        w[:, space.operations.index(space.none_op)] = float("-inf")
    best_weight, best_op = w.max(dim=1)
    edges: List[GenotypeEdge] = []
    for j in space.node_ids:
        inputs = space.node_inputs(j)
        sl = space.node_edge_slice(j)
        scores = best_weight[sl]
        # stable: on equal scores the earlier input wins
        order = sorted(range(len(inputs)), key=lambda n: (-float(scores[n]), n))[
            : space.edges_per_node
        ]
        for n in sorted(order):
            edges.append(
                GenotypeEdge(node=j, input=inputs[n], op=space.operations[int(best_op[sl][n])])
            )
    return tuple(edges)


def derive_genotype(
    alpha: Tensor, space: SearchSpace, domains: Sequence[str]
) -> MultiDomainGenotype:
    """Per-domain argmax genotype from alpha of shape (D, E, K)."""
    if alpha.dim() != 3 or alpha.shape[0] != len(domains):
        raise GenotypeError(
            f"alpha of shape {tuple(alpha.shape)} does not hold one row per domain of {list(domains)}"
        )
    logits = alpha.detach().double()
    if space.allowed_ops is not None and tuple(logits.shape[1:]) == (
        space.num_edges,
        space.num_ops,
    ):
        mask = torch.tensor(space.allowed_mask(), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return MultiDomainGenotype(
        space, tuple(domains), {d: derive_cell(probs[k], space) for k, d in enumerate(domains)}
    )


def default_share_key(edge: GenotypeEdge) -> Hashable:
    """Modules are shared when they sit on the same edge and do the same operation."""
    return (edge.input, edge.node, edge.op)


def multimodel_param_count(
    genotype: MultiDomainGenotype,
    op_params: Callable[[GenotypeEdge], int],
    shared_params: int = 0,
    share_key: Callable[[GenotypeEdge], Hashable] = default_share_key,
    domains: Optional[Iterable[str]] = None,
) -> int:
    """Parameters of the concordant multimodel (or of the model of some ``domains`` only).

    Every distinct ``share_key`` among the chosen edges is one module with ``op_params(edge)``
    parameters; ``shared_params`` counts what all domains use anyway (embeddings, stem, head).
    """
    chosen = domains if domains is not None else genotype.domains
    modules: Dict[Hashable, int] = {}
    for d in chosen:
        for e in genotype.cells[d]:
            modules.setdefault(share_key(e), op_params(e))
    return shared_params + sum(modules.values())


# ---------------------------------------------------------------------------- files
def genotype_from_dict(data: Any, source: str = "genotype") -> MultiDomainGenotype:
    """Parse the JSON structure of a genotype file, with errors naming ``source``."""
    if not isinstance(data, dict):
        raise GenotypeError(
            f"{source}: expected a JSON object at the top level, got {type(data).__name__}"
        )
    if data.get("format") != GENOTYPE_FORMAT:
        raise GenotypeError(
            f"{source}: field 'format' is {data.get('format')!r}, expected {GENOTYPE_FORMAT!r}"
        )
    if data.get("version") != GENOTYPE_VERSION:
        raise GenotypeError(
            f"{source}: unsupported genotype version {data.get('version')!r} (this reader knows {GENOTYPE_VERSION})"
        )
    for key in ("search_space", "domains", "cells"):
        if key not in data:
            raise GenotypeError(f"{source}: missing field {key!r}")
    try:
        space = SearchSpace.from_dict(data["search_space"])
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise GenotypeError(f"{source}: bad field 'search_space': {e}") from None
    domains = data["domains"]
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise GenotypeError(f"{source}: field 'domains' must be a list of names")
    cells_raw = data["cells"]
    if not isinstance(cells_raw, dict):
        raise GenotypeError(f"{source}: field 'cells' must map domain names to edge lists")
    cells: Dict[str, Cell] = {}
    for domain, edges in cells_raw.items():
        if not isinstance(edges, list):
            raise GenotypeError(f"{source}: domain {domain!r}: cell must be a list of edges")
        parsed = []
        for k, e in enumerate(edges):
            try:
                parsed.append(
                    GenotypeEdge(node=int(e["node"]), input=int(e["input"]), op=str(e["op"]))
                )
            except (KeyError, TypeError, ValueError):
                raise GenotypeError(
                    f"{source}: domain {domain!r}: edge {k} must be an object with 'node', 'input' and 'op', got {e!r}"
                ) from None
        cells[domain] = tuple(parsed)
    try:
        genotype = MultiDomainGenotype(space, tuple(domains), cells)
    except GenotypeError as e:
        raise GenotypeError(str(e).replace("genotype:", f"{source}:", 1)) from None
    if "union" in data and data["union"] != genotype.to_dict()["union"]:
        raise GenotypeError(
            f"{source}: field 'union' does not match the union of the domains' cells"
        )
    return genotype


def check_compatible(
    genotype: MultiDomainGenotype,
    source: str,
    domains: Optional[Sequence[str]] = None,
    space: Optional[SearchSpace] = None,
) -> None:
    """Raise a :class:`GenotypeError` unless ``genotype`` fits the given domains and search space."""
    if domains is not None and list(genotype.domains) != list(domains):
        raise GenotypeError(
            f"{source}: genotype is for {genotype.num_domains} domain(s) {list(genotype.domains)}, "
            f"this run has {len(domains)} domain(s) {list(domains)}"
        )
    if space is not None and genotype.space != space:
        raise GenotypeError(
            f"{source}: genotype search space {genotype.space.to_dict()} differs from the model's {space.to_dict()} "
            f"(e.g. a different number of nodes or edges)"
        )


def check_extension(
    old: MultiDomainGenotype, new: MultiDomainGenotype, source: str = "genotype"
) -> None:
    """Raise a :class:`GenotypeError` unless ``new`` extends ``old``: the same search space, the
    old domains first and in order, each with exactly its old cell, then at least one new domain."""
    check_compatible(new, source, space=old.space)
    n = old.num_domains
    if list(new.domains[:n]) != list(old.domains) or new.num_domains <= n:
        raise GenotypeError(
            f"{source}: domains {list(new.domains)} do not extend {list(old.domains)} (the old domains "
            "first, in their order, then at least one new one)"
        )
    for d in old.domains:
        if new.cells[d] != old.cells[d]:
            moved = sorted(set(new.cells[d]) ^ set(old.cells[d]))
            raise GenotypeError(
                f"{source}: changes the architecture of old domain {d!r} "
                f"({', '.join(f'node {e.node}: {e.input}->{e.op}' for e in moved)} differ); an "
                "extension keeps every old domain's cell as it was"
            )


def save_genotype(
    path: str, genotype: MultiDomainGenotype, extra: Optional[Dict[str, Any]] = None
) -> None:
    """Write ``genotype`` (plus optional ``extra`` fields such as softmax(alpha) or metrics) atomically."""
    data = genotype.to_dict()
    if extra:
        clash = set(extra) & set(data)
        if clash:
            raise ValueError(f"extra fields {sorted(clash)} would overwrite genotype fields")
        data.update(extra)
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def read_genotype_json(path: str) -> Dict[str, Any]:
    """The raw JSON object of a genotype file (for the extra fields), with clear errors."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise GenotypeError(f"{path}: genotype file not found") from None
    except json.JSONDecodeError as e:
        raise GenotypeError(f"{path}: malformed JSON: {e}") from None


def load_genotype(
    path: str, domains: Optional[Sequence[str]] = None, space: Optional[SearchSpace] = None
) -> MultiDomainGenotype:
    """Read a genotype file; optionally check it is for ``domains`` and ``space``."""
    genotype = genotype_from_dict(read_genotype_json(path), source=path)
    check_compatible(genotype, path, domains, space)
    return genotype
