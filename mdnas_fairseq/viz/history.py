"""Curves of the search over its epochs, from ``alpha_history.jsonl``.

* :func:`plot_alpha_history`: per domain the mean over edges of each operation's weight
  softmax(alpha) against the epoch (how the search moves towards its operations).
* :func:`plot_decisiveness`: per domain the mean entropy of softmax(alpha) over edges and the mean
  best-vs-second margin (non-``none`` operations) against the epoch
  (:mod:`mdnas_fairseq.search.decisiveness`; how firmly the search decides).

matplotlib through its object API on the Agg canvas, files written atomically (as :mod:`.heatmap`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..search.decisiveness import edge_entropy, edge_margin
from ..search.space import SearchSpace
from .common import domain_colors, new_figure, save_png


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


def _weights(weights, source: str, epoch, domain: str) -> np.ndarray:
    """One domain's softmax(alpha) of one history entry as a float array; an error names where."""
    try:
        return np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{source}: epoch {epoch}, domain {domain!r}: weights are not numbers"
        ) from None


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
            array = _weights(weights, source, entry["epoch"], domain)
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
    fig = new_figure((6.0 * ncols, 3.6 * nrows))
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
    return save_png(fig, out_png)


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
            array = _weights(weights, source, entry["epoch"], domain)
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

    fig = new_figure((11.0, 3.8))
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
    return save_png(fig, out_png)
