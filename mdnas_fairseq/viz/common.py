"""Helpers shared by the drawing, heatmap and report modules: file names, colours, alpha arrays.

Nothing here imports graphviz or fairseq at import time (matplotlib only inside new_figure).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..search.atomic import atomic_path
from ..search.space import SearchSpace

# Tableau-10 colours; domain k gets DOMAIN_PALETTE[k % len(DOMAIN_PALETTE)].
DOMAIN_PALETTE = (
    "#1f77b4",  # blue
    "#d62728",  # red
    "#2ca02c",  # green
    "#ff7f0e",  # orange
    "#9467bd",  # purple
    "#8c564b",  # brown
    "#e377c2",  # pink
    "#17becf",  # cyan
    "#bcbd22",  # olive
    "#7f7f7f",  # grey
)


def domain_colors(domains: Sequence[str]) -> Dict[str, str]:
    """A fixed colour per domain, by the domain's position in ``domains``."""
    return {d: DOMAIN_PALETTE[k % len(DOMAIN_PALETTE)] for k, d in enumerate(domains)}


def safe_file_stem(name: str) -> str:
    """``name`` reduced to characters that are safe in a file name on every platform."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._")
    return stem or "unnamed"


def unique_file_stems(names: Sequence[str]) -> Dict[str, str]:
    """Safe, pairwise distinct file stems for ``names`` (``"a b"`` and ``"a_b"`` must not overwrite each other)."""
    stems: Dict[str, str] = {}
    taken = set()
    for name in names:
        base = safe_file_stem(name)
        stem, k = base, 2
        while stem in taken:
            stem, k = f"{base}_{k}", k + 1
        taken.add(stem)
        stems[name] = stem
    return stems


def edge_labels(space: SearchSpace) -> List[str]:
    """``"i->j"`` for every edge of ``space``, in the order of the E axis of alpha."""
    return [f"{i}->{j}" for i, j in space.edges]


def as_weight_array(
    weights: Any, space: SearchSpace, domains: Sequence[str], source: str = "weights"
) -> np.ndarray:
    """Softmax weights as a float array of shape (D, E, K), checked against ``space`` and ``domains``.

    ``weights`` may be a torch tensor, a numpy array, a nested list (D, E, K) or a mapping
    ``{domain: [[K weights] per edge]}`` (the ``alpha`` field of genotype files).
    Raises :class:`ValueError` naming ``source`` and the shape it expected.
    """
    if isinstance(weights, dict):
        missing = [d for d in domains if d not in weights]
        if missing:
            raise ValueError(
                f"{source}: no weights for domain(s) {missing} (it has {sorted(weights)})"
            )
        weights = [weights[d] for d in domains]
    if hasattr(weights, "detach"):  # torch tensor, without importing torch here
        weights = weights.detach().cpu().double().numpy()
    try:
        array = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{source}: cannot be read as a (domains, edges, operations) array of numbers: {e}"
        ) from None
    expected = (len(domains), space.num_edges, space.num_ops)
    if array.shape != expected:
        raise ValueError(
            f"{source}: shape {array.shape} does not match {len(domains)} domain(s) {list(domains)} x "
            f"{space.num_edges} edges x {space.num_ops} operations of search space {space.name!r}"
        )
    return array


def new_figure(figsize: Tuple[float, float]):
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


def save_png(fig, path: str, dpi: int = 110) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
