"""The two regularizers of concordant multi-domain search (docs/method.md, section 3)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def js_structural_loss(alpha: Tensor) -> Tensor:
    """Structural (concordance) regularizer.

    ``L_struct = 1/(D(D-1)) * sum_edges sum_d sum_{d' != d} JS(P_d(e) || P_d'(e))`` with
    ``P_d(e) = softmax(alpha[d, e])`` and JS in nats.

    Args:
        alpha: architecture parameters of shape (D, E, K).

    Returns:
        a scalar; exactly 0 (still attached to ``alpha``'s graph) for D = 1.
    """
    if alpha.dim() != 3:
        raise ValueError(f"alpha must have shape (D, E, K), got {tuple(alpha.shape)}")
    num_domains = alpha.shape[0]
    if num_domains < 2:
        return alpha.sum() * 0.0
    # Work in log space: every term is finite even where a probability underflows to 0.
    log_p = F.log_softmax(alpha, dim=-1)  # (D, E, K)
    log_m = torch.logaddexp(log_p[:, None], log_p[None, :]) - math.log(2.0)  # (D, D, E, K)
    # kl[d, d'] = KL(P_d || M_dd') summed over edges
    kl = (log_p.exp()[:, None] * (log_p[:, None] - log_m)).sum(dim=(-1, -2))  # (D, D)
    js = 0.5 * (kl + kl.transpose(0, 1))
    off_diagonal = ~torch.eye(num_domains, dtype=torch.bool, device=alpha.device)
    return js[off_diagonal].sum() / (num_domains * (num_domains - 1))


def pairwise_euclidean(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances between the rows of ``a`` (N, H) and ``b`` (M, H), with a finite gradient at 0."""
    diff = a[:, None, :] - b[None, :, :]
    return diff.pow(2).sum(-1).clamp_min(eps).sqrt()


def batch_hard_triplet_loss(
    h_a: Tensor, labels_a: Tensor, h_b: Tensor, labels_b: Tensor, margin: float = 1.0
) -> Tensor:
    """Triplet loss across two domains with batch-hard mining.

    Anchors are the rows of ``h_a``; positives and negatives are rows of ``h_b``. For each
    anchor the hardest positive is the farthest row of ``h_b`` with the same label and the
    hardest negative the closest row with another label; both are found and scored with the
    same Euclidean distance. The loss is the mean, over the anchors that have both a positive
    and a negative, of ``max(0, margin + d_pos - d_neg)``.

    Returns:
        a scalar; a zero still attached to the inputs' graph when no anchor has a valid triplet.
    """
    if h_a.dim() != 2 or h_b.dim() != 2 or h_a.shape[1] != h_b.shape[1]:
        raise ValueError(
            f"h_a and h_b must be (N, H) and (M, H), got {tuple(h_a.shape)} and {tuple(h_b.shape)}"
        )
    if labels_a.shape != h_a.shape[:1] or labels_b.shape != h_b.shape[:1]:
        raise ValueError("labels_a / labels_b must hold one label per row of h_a / h_b")
    dist = pairwise_euclidean(h_a, h_b)  # (N, M)
    same = labels_a[:, None] == labels_b[None, :]
    valid = same.any(dim=1) & (~same).any(dim=1)
    hardest_pos = dist.masked_fill(~same, float("-inf")).max(dim=1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(dim=1).values
    # anchors without a positive or a negative get -inf here, so 0 after the hinge (no host read
    # of ``valid`` is needed: the mean is over the valid anchors, 0 when there is none)
    losses = torch.where(
        valid, F.relu(margin + hardest_pos - hardest_neg), torch.zeros_like(hardest_pos)
    )
    return losses.sum() / valid.sum().clamp_min(1) + (h_a.sum() + h_b.sum()) * 0.0
