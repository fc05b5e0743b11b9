"""Pictures of the architecture weights softmax(alpha).

* :func:`save_alpha_heatmaps`: one PNG per domain, rows = edges ``"i->j"``, columns = operations,
  every cell annotated with its weight (blank where the edge does not allow the operation).
  Called by the search at every epoch end.

Curves over the epochs (``alpha_history.jsonl``) are in :mod:`.history`.

matplotlib is used through its object API on the Agg canvas: no display is needed and the
process-wide pyplot backend is left alone. Every file is written atomically.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..search.space import SearchSpace
from .common import as_weight_array, edge_labels, new_figure, save_png, unique_file_stems

ROW_SUM_TOLERANCE = 1e-3


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def alpha_heatmap_figure(weights: np.ndarray, space: SearchSpace, title: str):
    """Heatmap Figure of one domain's softmax weights ``weights`` of shape (E, K), values annotated."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (space.num_edges, space.num_ops):
        raise ValueError(
            f"weights of shape {weights.shape} do not match search space {space.name!r} "
            f"({space.num_edges} edges x {space.num_ops} operations)"
        )
    num_edges, num_ops = weights.shape
    allowed = np.asarray(space.allowed_mask(), dtype=bool)
    fig = new_figure((2.2 + 1.05 * num_ops, 1.4 + 0.32 * num_edges))
    ax = fig.add_subplot(1, 1, 1)
    # operations an edge does not allow are left blank (no colour, no number)
    image = ax.imshow(
        np.ma.masked_invalid(np.where(allowed, weights, np.nan)),
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        aspect="auto",
    )
    ax.set_xticks(range(num_ops), labels=list(space.operations), rotation=35, ha="right")
    ax.set_yticks(range(num_edges), labels=edge_labels(space))
    ax.set_xlabel("operation")
    ax.set_ylabel("edge (input -> node)")
    ax.set_title(title)
    for e in range(num_edges):
        for k in range(num_ops):
            if not allowed[e, k]:
                continue
            value = weights[e, k]
            text = f"{value:.2f}" if math.isfinite(value) else "nan"
            color = "black" if math.isfinite(value) and value > 0.55 else "white"
            ax.text(k, e, text, ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, label="softmax weight")
    return fig


def save_alpha_heatmaps(
    weights: Any,
    space: SearchSpace,
    domains: Sequence[str],
    out_dir: str,
    epoch: Optional[int] = None,
    from_logits: bool = False,
) -> List[str]:
    """Write one heatmap PNG per domain of the softmax weights into ``out_dir``; return the paths.

    ``weights``: softmax(alpha) of shape (D, E, K) as a tensor, array, nested list or
    ``{domain: [[K weights] per edge]}``; pass raw alpha with ``from_logits=True``. Files are
    ``alpha_{domain}.png``, or ``alpha_{domain}_epoch{N}.png`` when ``epoch`` is given.
    """
    array = as_weight_array(weights, space, domains, source="alpha weights")
    if from_logits:
        array = _softmax(array)
    else:
        finite_rows = np.isfinite(array).all(axis=-1)
        sums = array.sum(axis=-1)
        bad = finite_rows & (np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
        if bad.any():
            d, e = np.argwhere(bad)[0]
            raise ValueError(
                f"alpha weights: row of domain {domains[d]!r}, edge {edge_labels(space)[e]} sums to {sums[d, e]:.4f}, "
                f"not 1; these must be softmax weights (pass raw alpha with from_logits=True)"
            )
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for d, (domain, path) in enumerate(heatmap_paths(domains, out_dir, epoch).items()):
        title = f"softmax(alpha), domain {domain}" + (
            f", epoch {epoch}" if epoch is not None else ""
        )
        fig = alpha_heatmap_figure(array[d], space, title)
        paths.append(save_png(fig, path))
    return paths


def heatmap_paths(
    domains: Sequence[str], out_dir: str, epoch: Optional[int] = None
) -> Dict[str, str]:
    """Domain -> the PNG path :func:`save_alpha_heatmaps` writes its heatmap to (in domain order)."""
    stems = unique_file_stems(list(domains))
    suffix = f"_epoch{epoch}" if epoch is not None else ""
    return {
        domain: os.path.join(out_dir, f"alpha_{stems[domain]}{suffix}.png") for domain in domains
    }
