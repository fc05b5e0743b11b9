"""How decided a search is, per domain: the entropy of softmax(alpha) and the best-vs-second margin.

Both are means over the edges of a (..., E, K) probability tensor (``softmax(alpha)``; pass raw
alpha through :func:`decisiveness` with ``logits=True``) and return (...,) tensors, one value per
domain for (D, E, K). They are plain tensor operations (no ``.item()``, no host sync), so a trainer
can log them lazily.

* :func:`edge_entropy`: ``-sum_k p_k log p_k`` over ALL K operations, ``none`` included (the entropy
  of softmax(alpha) itself, in nats; ``log K`` for uniform probabilities, 0 for one-hot).
* :func:`edge_margin`: the largest minus the second largest weight among the operations other than
  ``none``, on the plain softmax(alpha) probabilities. DARTS derivation never picks ``none`` and ranks the
  other operations by these probabilities, so the margin says how firmly the derived operation won.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .space import SearchSpace


def edge_entropy(probs: Tensor) -> Tensor:
    """Mean over edges of the entropy (nats) of the K mixing probabilities of each edge: (..., E, K) -> (...,)."""
    return -torch.xlogy(probs, probs).sum(dim=-1).mean(dim=-1)


def edge_margin(probs: Tensor, space: SearchSpace) -> Tensor:
    """Mean over edges of best minus second-best weight among the non-``none`` operations: (..., E, K) -> (...,)."""
    if probs.shape[-1] != space.num_ops:
        raise ValueError(
            f"probabilities with {probs.shape[-1]} operations do not match search space {space.name!r} "
            f"({space.num_ops} operations)"
        )
    if space.num_ops - (space.none_op in space.operations) < 2:
        raise ValueError(
            f"search space {space.name!r}: a margin needs two operations other than {space.none_op!r}"
        )
    if space.none_op in space.operations:  # slices, not an index tensor: no host-to-device copy
        k = space.op_index(space.none_op)
        probs = torch.cat([probs[..., :k], probs[..., k + 1 :]], dim=-1)
    top = probs.topk(2, dim=-1).values
    return (top[..., 0] - top[..., 1]).mean(dim=-1)


def decisiveness(values: Tensor, space: SearchSpace, logits: bool = False) -> Tuple[Tensor, Tensor]:
    """``(edge_entropy, edge_margin)`` of mixing probabilities (or of raw alpha with ``logits=True``)."""
    probs = torch.softmax(values, dim=-1) if logits else values
    return edge_entropy(probs), edge_margin(probs, space)
