"""Pictures of the architecture weights softmax(alpha).

* :func:`save_alpha_heatmaps`: one PNG per domain, rows = edges ``"i->j"``, columns = operations,
  every cell annotated with its weight (blank where the edge does not allow the operation).
  Called by the search at every epoch end.
* :func:`plot_alpha_history`: from ``alpha_history.jsonl``, per domain the mean over edges of each
  operation's weight against the epoch (how the search moves towards its operations).
* :func:`plot_decisiveness`: from ``alpha_history.jsonl``, per domain the mean entropy of
  softmax(alpha) over edges and the mean best-vs-second margin (non-``none`` operations) against
  the epoch (:mod:`mdnas_fairseq.search.decisiveness`; how firmly the search decides).

matplotlib is used through its object API on the Agg canvas: no display is needed and the
process-wide pyplot backend is left alone. Every file is written atomically.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..search.atomic import atomic_path
from ..search.decisiveness import edge_entropy, edge_margin
from ..search.space import SearchSpace
from .common import as_weight_array, domain_colors, edge_labels, unique_file_stems

ROW_SUM_TOLERANCE = 1e-3


def _figure(figsize: Tuple[float, float]):
    """A matplotlib Figure on an Agg canvas (no pyplot, no display)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "matplotlib is needed for the alpha pictures: `pip install matplotlib`"
        ) from None
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path: str, dpi: int = 110) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


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
    fig = _figure((2.2 + 1.05 * num_ops, 1.4 + 0.32 * num_edges))
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
        paths.append(_save_png(fig, path))
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


# ------------------------------------------------------------------------------ history
def read_alpha_history(history_jsonl: str) -> List[Dict[str, Any]]:
    """The entries of ``alpha_history.jsonl`` sorted by epoch; errors name the file, line and field."""
    try:
        with open(history_jsonl, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{history_jsonl}: alpha history file not found") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{history_jsonl}, line {number}: malformed JSON: {e}") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{history_jsonl}, line {number}: expected a JSON object")
        for field in ("epoch", "alpha"):
            if field not in entry:
                raise ValueError(f"{history_jsonl}, line {number}: missing field {field!r}")
        if not isinstance(entry["alpha"], dict) or not entry["alpha"]:
            raise ValueError(
                f"{history_jsonl}, line {number}: field 'alpha' must map domain names to weights"
            )
        entries.append(entry)
    if not entries:
        raise ValueError(f"{history_jsonl}: no entries")
    return sorted(entries, key=lambda entry: entry["epoch"])


def alpha_history_series(
    entries: Sequence[Dict[str, Any]], source: str = "alpha history"
) -> Tuple[List[str], Dict[str, Tuple[List[int], np.ndarray]]]:
    """Per domain, the epochs and the mean over edges of each operation's weight, shape (epochs, K).

    Returns ``(domains, {domain: (epochs, means)})``; domains in order of first appearance.
    """
    domains: List[str] = []
    series: Dict[str, Tuple[List[int], List[np.ndarray]]] = {}
    num_ops = None
    for entry in entries:
        for domain, weights in entry["alpha"].items():
            try:
                array = np.asarray(weights, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{source}: epoch {entry['epoch']}, domain {domain!r}: weights are not numbers"
                ) from None
            if array.ndim != 2:
                raise ValueError(
                    f"{source}: epoch {entry['epoch']}, domain {domain!r}: weights of shape {array.shape}, "
                    f"expected (edges, operations)"
                )
            if num_ops is None:
                num_ops = array.shape[1]
            elif array.shape[1] != num_ops:
                raise ValueError(
                    f"{source}: epoch {entry['epoch']}, domain {domain!r}: {array.shape[1]} operations, "
                    f"earlier entries have {num_ops}"
                )
            if domain not in series:
                domains.append(domain)
                series[domain] = ([], [])
            series[domain][0].append(int(entry["epoch"]))
            series[domain][1].append(array.mean(axis=0))
    return domains, {d: (epochs, np.stack(means)) for d, (epochs, means) in series.items()}


def _operations_beside(history_jsonl: str) -> Optional[List[str]]:
    """Operation names from ``genotype.json`` in the history file's directory, if readable."""
    path = os.path.join(os.path.dirname(os.path.abspath(history_jsonl)), "genotype.json")
    try:
        with open(path, encoding="utf-8") as f:
            return list(json.load(f)["search_space"]["operations"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plot_alpha_history(
    history_jsonl: str, out_png: str, operations: Optional[Sequence[str]] = None
) -> str:
    """Plot, per domain, the mean over edges of each operation's softmax weight against the epoch.

    ``operations`` names the K operations; by default they are read from ``genotype.json`` beside
    the history file, else the curves are labelled ``op 0 .. op K-1``. Returns ``out_png``.
    """
    entries = read_alpha_history(history_jsonl)
    domains, series = alpha_history_series(entries, source=history_jsonl)
    num_ops = next(iter(series.values()))[1].shape[1]
    if operations is None:
        operations = _operations_beside(history_jsonl)
    if operations is None or len(operations) != num_ops:
        operations = [f"op {k}" for k in range(num_ops)]
    ncols = min(2, len(domains))
    nrows = math.ceil(len(domains) / ncols)
    fig = _figure((6.0 * ncols, 3.6 * nrows))
    from matplotlib.ticker import MaxNLocator

    colors = domain_colors(domains)
    for index, domain in enumerate(domains):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        epochs, means = series[domain]
        for k, op in enumerate(operations):
            ax.plot(epochs, means[:, k], marker="o", markersize=3, label=op)
        ax.set_title(f"domain {domain}", color=colors[domain])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("mean weight over edges")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("softmax(alpha) per operation over the search")
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    return _save_png(fig, out_png)


# ------------------------------------------------------------------------------ decisiveness
def decisiveness_series(
    entries: Sequence[Dict[str, Any]], space: SearchSpace, source: str = "alpha history"
) -> Tuple[List[str], Dict[str, Tuple[List[int], np.ndarray, np.ndarray]]]:
    """Per domain, the epochs, the mean edge entropy and the mean edge margin of softmax(alpha).

    Returns ``(domains, {domain: (epochs, entropy, margin)})``; domains in order of first appearance.
    """
    import torch

    domains: List[str] = []
    rows: Dict[str, Tuple[List[int], List[float], List[float]]] = {}
    for entry in entries:
        for domain, weights in entry["alpha"].items():
            try:
                array = np.asarray(weights, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{source}: epoch {entry['epoch']}, domain {domain!r}: weights are not numbers"
                ) from None
            if array.shape != (space.num_edges, space.num_ops):
                raise ValueError(
                    f"{source}: epoch {entry['epoch']}, domain {domain!r}: weights of shape {array.shape}, expected "
                    f"{space.num_edges} edges x {space.num_ops} operations of search space {space.name!r}"
                )
            probs = torch.from_numpy(array)
            if domain not in rows:
                domains.append(domain)
                rows[domain] = ([], [], [])
            rows[domain][0].append(int(entry["epoch"]))
            rows[domain][1].append(float(edge_entropy(probs)))
            rows[domain][2].append(float(edge_margin(probs, space)))
    return domains, {d: (e, np.asarray(h), np.asarray(m)) for d, (e, h, m) in rows.items()}


def plot_decisiveness(history_jsonl: str, out_png: str, space: SearchSpace) -> str:
    """Plot, per domain, the mean edge entropy and margin of softmax(alpha) against the epoch."""
    domains, series = decisiveness_series(
        read_alpha_history(history_jsonl), space, source=history_jsonl
    )
    from matplotlib.ticker import MaxNLocator

    fig = _figure((11.0, 3.8))
    colors = domain_colors(domains)
    panels = [
        ("mean entropy of softmax(alpha) over edges (nats)", 1, (0.0, math.log(space.num_ops))),
        (f"mean margin best - second (without {space.none_op!r})", 2, (0.0, 1.0)),
    ]
    for index, (label, column, limits) in enumerate(panels):
        ax = fig.add_subplot(1, 2, index + 1)
        for domain in domains:
            ax.plot(
                series[domain][0],
                series[domain][column],
                marker="o",
                markersize=3,
                color=colors[domain],
                label=domain,
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(limits[0], limits[1] * 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("How decided the search is, per domain")
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    return _save_png(fig, out_png)
