"""Perturbation-based architecture selection (Wang et al., ICLR 2021, "Rethinking architecture
selection in differentiable NAS"), beside DARTS' argmax (:func:`~.genotype.derive_genotype`).

Argmax keeps the operation with the largest softmax(alpha) weight. Perturbation keeps the one the
trained supernetwork NEEDS: the operation whose removal raises the architecture's held-out loss
the most, one decision at a time, with a short fine-tune of the supernetwork between decisions.
As in the paper (and its code, ``darts-pt``), the supernetwork runs on mixing weights ``W`` (E, K)
per architecture, starting at softmax(alpha):

1. **Operations, edge by edge.** For an edge ``e``, the candidates are its allowed operations but
   ``none`` (a genotype never holds ``none``). "Removing" candidate ``k`` sets ``W[e, k] = 0`` and
   leaves the other weights as they are (not renormalised: the mixed operation loses that term).
   The candidate whose removal gives the largest held-out loss is kept and the edge is
   discretised: ``W[e]`` becomes one-hot on it.
2. **Inputs, node by node** (the topology), once every edge holds one operation. For a node ``j``
   with more incoming edges than the space keeps (``edges_per_node``: 1 for the recurrent cell,
   2 for the conv cell), "removing" input ``i`` sets the whole row ``W[(i, j)] = 0``; the
   ``edges_per_node`` inputs whose removal hurts most are kept, with the operation stage 1 chose on
   their edge, and the other rows of the node stay 0. A node with no more inputs than it keeps
   (the Transformer chain: one each) is no decision.

For the recurrent cell (a node picks one input and one activation) this means: first, on every
edge ``i -> j``, the activation the supernetwork needs there; then, per node, the input whose
(discretised) edge it needs most. The edges are visited in a seeded random order (the paper's
default), or in the space's edge order (``order="fixed"``); so are the nodes in stage 2. All
architectures (domains) decide the same edge or node at the same time, each on its own held-out
loss and its own weights, then the supernetwork (whose weights the domains share) is fine-tuned
with every architecture's current ``W``; there is a fine-tune between two consecutive decisions,
none after the last. Ties go to the larger current weight, then to the earlier operation / input.

The supernetwork is given as two callables, so this module needs neither fairseq nor a model:
``heldout_loss(row, W)``, the held-out loss of architecture ``row`` with mixing weights ``W``
(E, K), and ``finetune(W_all, steps)``, a few training steps with the weights of every
architecture (A, E, K). :func:`mixing_override` makes a network's
:class:`~.alpha.ArchitectureParameters` mix with such weights instead of softmax(alpha).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .alpha import ArchitectureParameters
from .genotype import GenotypeEdge, MultiDomainGenotype
from .space import SearchSpace

ORDERS = ("random", "fixed")

HeldoutLoss = Callable[[int, Tensor], float]
Finetune = Callable[[Tensor, int], None]


class SelectionError(ValueError):
    """Perturbation selection cannot run on what it was given; the message says why."""


@dataclass
class Decision:
    """One decision of one architecture: the operation of an edge (``stage == "operation"``, the
    edge ``input -> node``) or the inputs of a node (``stage == "input"``)."""

    stage: str
    architecture: str
    node: int
    input: Optional[int]
    base_loss: float  # held-out loss before the decision, nothing removed
    removed: Dict[str, float]  # candidate (operation, or input state as text) -> loss without it
    kept: List[Any]  # the operation (one), or the inputs kept

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"stage": self.stage, "architecture": self.architecture}
        out["edge" if self.stage == "operation" else "node"] = (
            [self.input, self.node] if self.stage == "operation" else self.node
        )
        out.update({"base_loss": self.base_loss, "loss_without": self.removed, "kept": self.kept})
        return out


@dataclass
class Selection:
    """What :func:`perturbation_select` returns: the genotype and how it was chosen."""

    genotype: MultiDomainGenotype
    edge_order: List[Tuple[int, int]]
    node_order: List[int]
    finetunes: int
    decisions: List[Decision] = field(default_factory=list)

    def record(self) -> Dict[str, Any]:
        """The JSON form of the orders and decisions (for the genotype file's ``derived_by``)."""
        return {
            "edge_order": [list(e) for e in self.edge_order],
            "node_order": list(self.node_order),
            "finetunes": self.finetunes,
            "decisions": [d.to_dict() for d in self.decisions],
        }


def _order(items: List[Any], order: str, generator: torch.Generator) -> List[Any]:
    if order == "fixed":
        return list(items)
    return [items[int(k)] for k in torch.randperm(len(items), generator=generator)]


def _checked_loss(value: Any, what: str) -> float:
    loss = float(value)
    if not math.isfinite(loss):
        raise SelectionError(f"the held-out loss {what} is {loss}; cannot compare candidates")
    return loss


def _best(candidates: List[int], losses: List[float], weights: List[float]) -> List[int]:
    """Candidates sorted by the loss without them (largest first), then weight, then position."""
    ranked = sorted(
        range(len(candidates)), key=lambda n: (-losses[n], -weights[n], n)
    )  # stable order for ties
    return [candidates[n] for n in ranked]


def perturbation_select(
    probs: Tensor,
    space: SearchSpace,
    names: Sequence[str],
    heldout_loss: HeldoutLoss,
    finetune: Optional[Finetune] = None,
    finetune_steps: int = 0,
    order: str = "random",
    seed: int = 0,
) -> Selection:
    """The genotype chosen by perturbation (module docstring) from the trained supernetwork.

    Args:
        probs: (A, E, K) mixing weights of the trained supernetwork, softmax(alpha) per
            architecture (disallowed operations at 0).
        space, names: the search space and the architecture names (one per row of ``probs``).
        heldout_loss: ``(row, W)`` -> the held-out loss of architecture ``row`` when its cell mixes
            with ``W`` (E, K); it must not change ``W``.
        finetune: ``(W_all, steps)``: train the supernetwork's weights ``steps`` steps with the
            mixing weights ``W_all`` (A, E, K); called between decisions when ``finetune_steps > 0``.
        order: ``"random"`` (a permutation drawn from ``seed``) or ``"fixed"`` (the space's order).
    """
    if order not in ORDERS:
        raise SelectionError(f"order must be one of {list(ORDERS)}, got {order!r}")
    if finetune_steps < 0:
        raise SelectionError(f"fine-tune steps must be >= 0, got {finetune_steps}")
    if finetune_steps > 0 and finetune is None:
        raise SelectionError(f"{finetune_steps} fine-tune steps asked for but no fine-tune given")
    names = list(names)
    shape = (len(names), space.num_edges, space.num_ops)
    if probs.dim() != 3 or tuple(probs.shape) != shape:
        raise SelectionError(
            f"mixing weights of shape {tuple(probs.shape)}, expected {shape} ({len(names)} "
            f"architecture(s) {names} x {space.num_edges} edges x {space.num_ops} operations)"
        )
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise SelectionError("mixing weights must be finite and >= 0")
    allowed = torch.tensor(space.allowed_mask(), dtype=torch.bool, device=probs.device)
    weights = probs.detach().clone().masked_fill(~allowed, 0.0)
    generator = torch.Generator().manual_seed(int(seed))
    edge_order = _order(list(space.edges), order, generator)
    nodes = [j for j in space.node_ids if len(space.node_inputs(j)) > space.edges_per_node]
    node_order = _order(nodes, order, generator)
    steps: List[Tuple[str, Any]] = [("operation", e) for e in edge_order]
    steps += [("input", j) for j in node_order]

    decisions: List[Decision] = []
    chosen_op: Dict[int, Dict[int, int]] = {}  # row -> edge index -> operation index
    kept_inputs: Dict[Tuple[int, int], List[int]] = {}  # (row, node) -> inputs
    finetunes = 0
    for number, (stage, where) in enumerate(steps):
        for row, name in enumerate(names):
            w = weights[row]
            base = _checked_loss(heldout_loss(row, w.clone()), f"of {name!r}")
            if stage == "operation":
                i, j = where
                e = space.edge_index(i, j)
                candidates = [
                    k
                    for k, op in enumerate(space.operations)
                    if op != space.none_op and op in space.allowed(e)
                ]
                losses = []
                for k in candidates:
                    trial = w.clone()
                    trial[e, k] = 0.0
                    what = f"of {name!r} without {space.operations[k]!r} on edge {i}->{j}"
                    losses.append(_checked_loss(heldout_loss(row, trial), what))
                k = _best(candidates, losses, [float(w[e, c]) for c in candidates])[0]
                w[e] = 0.0
                w[e, k] = 1.0
                chosen_op.setdefault(row, {})[e] = k
                removed = {space.operations[c]: x for c, x in zip(candidates, losses)}
                decisions.append(Decision(stage, name, j, i, base, removed, [space.operations[k]]))
            else:
                j = where
                inputs = space.node_inputs(j)
                losses = []
                for i in inputs:
                    trial = w.clone()
                    trial[space.edge_index(i, j)] = 0.0
                    what = f"of {name!r} without input {i} of node {j}"
                    losses.append(_checked_loss(heldout_loss(row, trial), what))
                strength = [float(w[space.edge_index(i, j)].sum()) for i in inputs]
                keep = sorted(_best(inputs, losses, strength)[: space.edges_per_node])
                for i in inputs:
                    if i not in keep:
                        w[space.edge_index(i, j)] = 0.0
                kept_inputs[(row, j)] = keep
                removed = {str(i): x for i, x in zip(inputs, losses)}
                decisions.append(Decision(stage, name, j, None, base, removed, keep))
        if finetune_steps > 0 and number < len(steps) - 1:
            finetune(weights.clone(), finetune_steps)
            finetunes += 1

    cells = {}
    for row, name in enumerate(names):
        edges = []
        for j in space.node_ids:
            for i in kept_inputs.get((row, j), space.node_inputs(j)):
                op = space.operations[chosen_op[row][space.edge_index(i, j)]]
                edges.append(GenotypeEdge(node=j, input=i, op=op))
        cells[name] = tuple(edges)
    genotype = MultiDomainGenotype(space, tuple(names), cells)
    return Selection(genotype, edge_order, node_order, finetunes, decisions)


@contextlib.contextmanager
def mixing_override(alphas: ArchitectureParameters, weights: Tensor) -> Iterator[None]:
    """Inside the block, ``alphas.mixing_probs`` returns rows of ``weights`` (A, E, K) (the
    temperature and Gumbel options are ignored) instead of softmax(alpha): a network routed through
    it runs the supernetwork with those mixing weights. Nothing of ``alphas`` is changed."""
    expected = (alphas.num_domains,) + tuple(alphas.alpha.shape[1:])
    if tuple(weights.shape) != expected:
        raise SelectionError(
            f"mixing weights of shape {tuple(weights.shape)} for architecture parameters of shape {expected}"
        )
    fixed = weights.detach().to(device=alphas.alpha.device, dtype=alphas.alpha.dtype)

    def mixing_probs(domains=None, temperature=1.0, gumbel=False, hard=False) -> Tensor:
        if domains is None:
            return fixed
        if isinstance(domains, int) and not 0 <= domains < fixed.shape[0]:
            raise IndexError(f"domain {domains} out of range for {fixed.shape[0]} domains")
        return fixed[domains]

    if "mixing_probs" in vars(alphas):
        raise SelectionError("mixing weights are already overridden (nested mixing_override)")
    object.__setattr__(alphas, "mixing_probs", mixing_probs)
    try:
        yield
    finally:
        object.__delattr__(alphas, "mixing_probs")
