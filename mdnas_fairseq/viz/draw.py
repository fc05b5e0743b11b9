"""Cell diagrams of a multi-domain genotype: one per domain and one of the concordant union.

Every diagram shows the cell's input states (RNN: ``x_t, h_{t-1}`` as state 0; conv:
``c_{k-2}``, ``c_{k-1}``; Transformer: the embeddings), its intermediate nodes (labelled with
their state id, as in the genotype file; a Transformer slot also with its layer and kind), one
edge per chosen operation labelled with the operation, and dashed edges from the nodes the cell
output combines (:attr:`SearchSpace.output_nodes`: every intermediate node for the RNN cell,
which averages them, and the conv cell, which concatenates them; the last slot of the
Transformer's chain).

In the union diagram (the concordant multimodel of docs/method.md, section 4) an edge may carry several
operations; an operation chosen by more than one domain is one shared module and is drawn bold
and black with the list of its domains, an operation of a single domain is drawn in that
domain's colour (the same colour as in the domain's own diagram).

Graphs are built with the ``graphviz`` Python package and rendered by the ``dot`` program
(Debian/Ubuntu: ``apt-get install graphviz``). Every file is written atomically.

Command line (console script ``mdnas-draw``)::

    mdnas-draw path/to/genotype.json --out DIR [--format png,svg] [--name genotype]
"""

from __future__ import annotations

import argparse
import html
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from ..search.atomic import atomic_path
from ..search.genotype import GenotypeError, MultiDomainGenotype, load_genotype
from ..search.space import SearchSpace
from .common import domain_colors, unique_file_stems

OUTPUT_NODE = "out"
SHARED_EDGE_COLOR = "#000000"
SHARED_EDGE_PENWIDTH = "2.5"
DEFAULT_FORMATS = ("png", "svg")

INSTALL_HINT = (
    "install Graphviz so that the `dot` program is on PATH: `apt-get install graphviz` "
    "(Debian/Ubuntu), `brew install graphviz` (macOS) or `conda install graphviz`"
)


class GraphvizNotInstalledError(RuntimeError):
    """The ``dot`` program (or the ``graphviz`` Python package) needed to render diagrams is missing."""


def _graphviz():
    """The ``graphviz`` Python package, or a :class:`GraphvizNotInstalledError` saying how to install it."""
    try:
        import graphviz
    except ImportError:
        raise GraphvizNotInstalledError(
            "the Python package 'graphviz' is not installed: `pip install graphviz` "
            "(or `pip install -e .[viz]` in the project)"
        ) from None
    return graphviz


def ensure_dot_available() -> str:
    """Path of the ``dot`` program; raises :class:`GraphvizNotInstalledError` if it is not on PATH."""
    _graphviz()
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizNotInstalledError(
            f"the Graphviz `dot` program was not found on PATH; {INSTALL_HINT}"
        )
    return dot


# ------------------------------------------------------------------------------ cell anatomy
def state_node_name(state: int) -> str:
    """DOT node name of cell state ``state`` (inputs and intermediate nodes)."""
    return f"s{state}"


def input_state_labels(space: SearchSpace) -> List[str]:
    """Display names of the cell's input states."""
    if space.name.startswith("darts_rnn") and space.num_input_nodes == 1:
        return ["x_t, h_{t-1}"]
    if space.name.startswith("darts_cnn") and space.num_input_nodes == 2:
        return ["c_{k-2}", "c_{k-1}"]
    if space.name.startswith("transformer") and space.num_input_nodes == 1:
        return ["embeddings + positions"]
    return [f"input {i}" for i in range(space.num_input_nodes)]


def node_label(space: SearchSpace, node: int) -> str:
    """Display name of an intermediate node: its state id (a Transformer slot: with layer and kind)."""
    if space.name.startswith("transformer") and space.num_input_nodes == 1:
        kind = "token mixing" if node % 2 == 1 else "channel mixing"
        return f"{node}: layer {(node + 1) // 2}, {kind}"
    return str(node)


def output_label(space: SearchSpace) -> str:
    """Display name of the cell output, with how it combines the intermediate nodes."""
    if space.name.startswith("darts_rnn"):
        return "h_t (mean of nodes)"
    if space.name.startswith("darts_cnn"):
        return "c_k (concat of nodes)"
    if space.name.startswith("transformer"):
        return "final LayerNorm, tied output projection"
    return "output (combines all nodes)" if len(space.output_nodes) > 1 else "output"


def union_key(genotype: MultiDomainGenotype) -> str:
    """Key of the union diagram in :func:`draw_genotype`'s result: ``"union"`` unless a domain has that name."""
    key = "union"
    while key in genotype.domains:
        key = "_" + key
    return key


def _new_cell_graph(genotype: MultiDomainGenotype, title_html: str):
    graphviz = _graphviz()
    space = genotype.space
    graph = graphviz.Digraph(
        name="cell",
        # a chain of many slots reads best top to bottom, like a layer diagram
        graph_attr={
            "rankdir": "LR" if space.topology is None else "TB",
            "label": f"<{title_html}>",
            "labelloc": "t",
            "fontsize": "16",
            "fontname": "Helvetica",
        },
        node_attr={"fontname": "Helvetica", "style": "filled"},
        edge_attr={"fontname": "Helvetica", "fontsize": "11"},
    )
    for i, label in enumerate(input_state_labels(space)):
        graph.node(state_node_name(i), graphviz.escape(label), shape="box", fillcolor="#cfe2f3")
    for j in space.node_ids:
        label = node_label(space, j)
        graph.node(
            state_node_name(j),
            graphviz.escape(label),
            shape="circle" if label == str(j) else "box",
            fillcolor="#fff2cc",
        )
    graph.node(OUTPUT_NODE, graphviz.escape(output_label(space)), shape="box", fillcolor="#d9ead3")
    return graph


def _add_output_edges(graph, space: SearchSpace) -> None:
    for j in space.output_nodes:
        graph.edge(
            state_node_name(j), OUTPUT_NODE, style="dashed", color="#999999", arrowhead="vee"
        )


def cell_digraph(genotype: MultiDomainGenotype, domain: str):
    """The ``graphviz.Digraph`` of ``domain``'s cell: one edge per (input, node, op), labelled with the op."""
    if domain not in genotype.cells:
        raise KeyError(
            f"genotype has no domain {domain!r}; its domains are {list(genotype.domains)}"
        )
    graphviz = _graphviz()
    color = domain_colors(genotype.domains)[domain]
    space = genotype.space
    title = (
        f'<b>domain <font color="{color}">{html.escape(domain)}</font></b>'
        f" ({html.escape(space.name)}, {space.num_nodes} nodes)"
    )
    graph = _new_cell_graph(genotype, title)
    for edge in genotype.cells[domain]:
        graph.edge(
            state_node_name(edge.input),
            state_node_name(edge.node),
            label=graphviz.escape(edge.op),
            color=color,
            fontcolor=color,
        )
    _add_output_edges(graph, space)
    return graph


def union_digraph(genotype: MultiDomainGenotype):
    """The ``graphviz.Digraph`` of the concordant union: one edge per distinct (input, node, op).

    Each label is ``"op (domain, ...)"`` listing the domains that chose the op on that edge;
    shared ops (several domains) are bold black, single-domain ops take that domain's colour.
    """
    graphviz = _graphviz()
    colors = domain_colors(genotype.domains)
    space = genotype.space
    legend = ", ".join(
        f'<font color="{colors[d]}">{html.escape(d)}</font>' for d in genotype.domains
    )
    title = (
        f"<b>concordant union of {genotype.num_domains} domain(s)</b> ({html.escape(space.name)}): {legend}"
        f"<br/>bold black = one module shared by several domains; coloured = used by one domain only"
    )
    graph = _new_cell_graph(genotype, title)
    for (i, j), ops in genotype.union().items():
        for op, users in ops.items():
            label = graphviz.escape(f"{op} ({', '.join(users)})")
            if len(users) > 1:
                graph.edge(
                    state_node_name(i),
                    state_node_name(j),
                    label=label,
                    color=SHARED_EDGE_COLOR,
                    fontcolor=SHARED_EDGE_COLOR,
                    penwidth=SHARED_EDGE_PENWIDTH,
                    style="bold",
                )
            else:
                graph.edge(
                    state_node_name(i),
                    state_node_name(j),
                    label=label,
                    color=colors[users[0]],
                    fontcolor=colors[users[0]],
                )
    _add_output_edges(graph, space)
    return graph


def genotype_digraphs(genotype: MultiDomainGenotype) -> Dict[str, object]:
    """Every diagram of ``genotype``: domain name -> its cell graph, :func:`union_key` -> the union graph."""
    graphs: Dict[str, object] = {d: cell_digraph(genotype, d) for d in genotype.domains}
    graphs[union_key(genotype)] = union_digraph(genotype)
    return graphs


# ------------------------------------------------------------------------------ rendering
def render_digraph(graph, path_stem: str, formats: Sequence[str]) -> List[str]:
    """Render ``graph`` with ``dot`` to ``path_stem.<format>`` for each format, each file atomically."""
    graphviz = _graphviz()
    written = []
    for fmt in formats:
        try:
            data = graph.pipe(format=fmt, engine="dot")
        except graphviz.ExecutableNotFound:
            raise GraphvizNotInstalledError(
                f"the Graphviz `dot` program was not found; {INSTALL_HINT}"
            ) from None
        except subprocess.CalledProcessError as e:
            stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
            raise RuntimeError(f"dot failed to render {path_stem}.{fmt}: {stderr}") from None
        path = f"{path_stem}.{fmt}"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
        written.append(path)
    return written


def _check_formats(formats: Sequence[str]) -> List[str]:
    graphviz = _graphviz()
    formats = [f.strip().lower() for f in formats if f and f.strip()]
    if not formats:
        raise ValueError("no output format given (e.g. png,svg)")
    unknown = [f for f in formats if f not in graphviz.FORMATS]
    if unknown:
        raise ValueError(
            f"unknown output format(s) {unknown}; Graphviz knows e.g. png, svg, pdf, gv"
        )
    return list(dict.fromkeys(formats))


def draw_genotype(
    genotype: MultiDomainGenotype,
    out_dir: str,
    formats: Sequence[str] = DEFAULT_FORMATS,
    name: str = "genotype",
) -> Dict[str, List[str]]:
    """Draw one cell diagram per domain and one of the union into ``out_dir``.

    Files are ``{name}_{domain}.{format}`` and ``{name}_union.{format}`` (names made file-safe and
    distinct; should a domain be called ``union``, the union's file gets a suffix).
    Returns diagram key (the domain name, or :func:`union_key` for the union) -> the written paths,
    one per format. Raises :class:`GraphvizNotInstalledError` if ``dot`` is missing.
    """
    formats = _check_formats(formats)
    ensure_dot_available()
    graphs = genotype_digraphs(genotype)
    stems = diagram_path_stems(genotype, out_dir, name)
    os.makedirs(out_dir, exist_ok=True)
    return {key: render_digraph(graph, stems[key], formats) for key, graph in graphs.items()}


def diagram_path_stems(
    genotype: MultiDomainGenotype, out_dir: str, name: str = "genotype"
) -> Dict[str, str]:
    """Diagram key -> the path, without format suffix, that :func:`draw_genotype` writes it to."""
    keys = list(genotype.domains) + [union_key(genotype)]  # domains first: they keep their names
    stems = unique_file_stems(keys)
    return {key: os.path.join(out_dir, f"{name}_{stems[key]}") for key in keys}


# ------------------------------------------------------------------------------ command line
def resolve_genotype_path(path: str) -> str:
    """``path`` itself, or ``path/genotype.json`` when ``path`` is a search directory."""
    if os.path.isdir(path):
        return os.path.join(path, "genotype.json")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``mdnas-draw GENOTYPE [--out DIR] [--format png,svg] [--name NAME]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="mdnas-draw",
        description="Draw the cells of a multi-domain genotype (one per domain and their concordant union).",
    )
    parser.add_argument(
        "genotype", help="genotype.json written by the search (or the search directory holding it)"
    )
    parser.add_argument(
        "--out", default=None, help="output directory (default: 'figures' beside the genotype file)"
    )
    parser.add_argument(
        "--format",
        default=",".join(DEFAULT_FORMATS),
        help="comma-separated output formats (default: png,svg)",
    )
    parser.add_argument("--name", default="genotype", help="file name prefix (default: genotype)")
    args = parser.parse_args(argv)

    path = resolve_genotype_path(args.genotype)
    out_dir = args.out or os.path.join(os.path.dirname(os.path.abspath(path)), "figures")
    try:
        genotype = load_genotype(path)
        written = draw_genotype(genotype, out_dir, formats=args.format.split(","), name=args.name)
    except (GenotypeError, GraphvizNotInstalledError, ValueError, RuntimeError, OSError) as e:
        print(f"mdnas-draw: error: {e}", file=sys.stderr)
        return 1
    for key, paths in written.items():
        for p in paths:
            print(f"{key}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
