"""Pictures and reports of a multi-domain search (no fairseq import).

* :mod:`.draw`: cell diagrams per domain and of the concordant union (Graphviz ``dot``);
  console script ``mdnas-draw``.
* :mod:`.heatmap`: softmax(alpha) heatmaps per domain and the alpha history plot (matplotlib, Agg).
* :mod:`.report`: the one-page ``report.md`` of a search directory; console script ``mdnas-report``.

graphviz and matplotlib are imported only when a picture is made, so this package imports
without them.
"""

from .draw import GraphvizNotInstalledError, cell_digraph, draw_genotype, union_digraph
from .heatmap import save_alpha_heatmaps
from .history import plot_alpha_history
from .report import write_report

__all__ = [
    "GraphvizNotInstalledError",
    "cell_digraph",
    "draw_genotype",
    "plot_alpha_history",
    "save_alpha_heatmaps",
    "union_digraph",
    "write_report",
]
