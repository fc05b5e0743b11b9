"""A one-page Markdown report of a search directory (fairseq's ``--save-dir`` of a search).

It reads ``genotype.json`` (required; the core genotype format plus the optional fields
``epoch``, ``alpha``, ``param_counts``, ``metrics`` and ``settings`` that the search adds),
``alpha_history.jsonl`` and ``genotypes/genotype_epoch{N}.json`` (both optional), draws what is
missing or older than ``genotype.json`` into ``figures/`` (cell diagrams, softmax(alpha)
heatmaps, the alpha history plot) and writes ``report.md`` with:

settings, each domain's cell (node / input / op), the concordant union with the domains using
each op, parameter counts per domain and of the multimodel (from ``param_counts``) beside the
number of distinct (edge, op) modules, the share of edges on which the domains agree
(:meth:`MultiDomainGenotype.agreement`), the final metrics, the same figures per saved epoch,
how decided the search is per epoch and domain (mean edge entropy of softmax(alpha) and mean
best-vs-second margin, computed from ``alpha_history.jsonl``, table and plot), and links to the
pictures.

A missing optional field or file, or a missing Graphviz ``dot``, is stated in the report instead
of failing. Command line (console script ``mdnas-report``)::

    mdnas-report SEARCH_DIR [--out report.md]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from ..search.atomic import atomic_write_text
from ..search.genotype import GenotypeError, genotype_from_dict, read_genotype_json
from .draw import node_label
from .report_sections import (
    FIGURES_DIR,
    GENOTYPE_FILE,
    REPORT_FILE,
    _decisiveness_section,
    _diagram_section,
    _epochs_section,
    _heatmap_section,
    _history_section,
    _missing,
    _param_counts,
    _state_label,
    _table,
    agreement_counts,
    format_number,
    format_percent,
    format_setting,
)


# ------------------------------------------------------------------------------ formatting
def write_report(search_dir: str, out: Optional[str] = None) -> str:
    """Write the Markdown report of ``search_dir`` (default ``search_dir/report.md``); return its path.

    Raises :class:`GenotypeError` naming the file if ``genotype.json`` is missing or unusable;
    every other missing piece is stated in the report.
    """
    if not os.path.isdir(search_dir):
        raise GenotypeError(f"{search_dir}: search directory not found")
    source_path = os.path.join(search_dir, GENOTYPE_FILE)
    data = read_genotype_json(source_path)
    genotype = genotype_from_dict(data, source=source_path)
    source = GENOTYPE_FILE
    source_mtime = os.path.getmtime(source_path)
    out = out or os.path.join(search_dir, REPORT_FILE)
    report_dir = os.path.dirname(os.path.abspath(out))
    figures_dir = os.path.join(search_dir, FIGURES_DIR)
    space = genotype.space

    lines = [f"# Search report: {os.path.basename(os.path.abspath(search_dir))}", ""]
    epoch = f"epoch {data['epoch']}" if "epoch" in data else "unknown epoch (field `epoch` missing)"
    lines += [
        f"Genotype of {epoch}, from `{source}`. Domains: **{', '.join(genotype.domains)}**. "
        f"Search space `{space.name}`: {space.num_input_nodes} input state(s), {space.num_nodes} nodes, "
        f"{space.num_edges} candidate edges, {space.edges_per_node} kept per node, operations "
        f"{', '.join('`' + op + '`' for op in space.operations)}.",
        "",
    ]

    counts = agreement_counts(genotype)
    lines += ["## Summary", ""]
    lines += [
        f"- Agreement: the domains chose the same single operation on **{counts['agreed_edges']} of "
        f"{counts['union_edges']}** edges of the union (**{format_percent(genotype.agreement())}**).",
        f"- Distinct (edge, op) modules in the multimodel: **{counts['distinct_modules']}** "
        f"({counts['shared_modules']} shared by several domains).",
    ]
    pc = data.get("param_counts")
    if isinstance(pc, dict) and "multimodel" in pc:
        lines.append(f"- Multimodel parameters: **{format_number(pc['multimodel'])}**.")
    lines.append("")

    lines += ["## Settings", ""]
    settings = data.get("settings")
    if settings is None:
        lines += [_missing("settings", source), ""]
    elif not isinstance(settings, dict):
        lines += [f"_Not available: field `settings` of `{source}` is not an object._", ""]
    else:
        lines += _table(["setting", "value"], [[k, format_setting(v)] for k, v in settings.items()])

    lines += ["## Final metrics", ""]
    metrics = data.get("metrics")
    if metrics is None:
        lines += [_missing("metrics", source), ""]
    elif not isinstance(metrics, dict) or not metrics:
        lines += [f"_Not available: field `metrics` of `{source}` is empty or not an object._", ""]
    else:
        lines += _table(["metric", "value"], [[k, format_number(v)] for k, v in metrics.items()])

    lines += ["## Parameter counts", ""]
    lines += _param_counts(data, genotype, source)

    lines += ["## Genotype per domain", ""]
    for domain in genotype.domains:
        lines += [f"### Domain {domain}", ""]
        lines += _table(
            ["node", "input", "op"],
            [
                [node_label(space, e.node), _state_label(genotype, e.input), f"`{e.op}`"]
                for e in genotype.cells[domain]
            ],
        )

    lines += ["## Concordant union (the multimodel's cell)", ""]
    rows = []
    for (i, j), ops in genotype.union().items():
        for op, users in ops.items():
            kind = "shared" if len(users) > 1 else "domain-specific"
            rows.append([j, _state_label(genotype, i), f"`{op}`", ", ".join(users), kind, i])
    rows.sort(key=lambda row: (row[0], row[5], row[2]))  # by node, then input, then op
    lines += _table(
        ["node", "input", "op", "domains using it", "module"],
        [[node_label(space, row[0])] + row[1:5] for row in rows],
    )

    lines += ["## Over the epochs", ""]
    lines += _epochs_section(search_dir)

    lines += ["## Decisiveness over the search", ""]
    lines += _decisiveness_section(search_dir, genotype, figures_dir, report_dir)

    lines += ["## Figures", "", "### Cells", ""]
    lines += _diagram_section(genotype, figures_dir, source_mtime, report_dir)
    lines += ["### softmax(alpha) of the final epoch", ""]
    lines += _heatmap_section(data, genotype, figures_dir, source, source_mtime, report_dir)
    lines += ["### softmax(alpha) over the search", ""]
    lines += _history_section(search_dir, genotype, figures_dir, report_dir)

    atomic_write_text(out, "\n".join(lines).rstrip("\n") + "\n")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``mdnas-report SEARCH_DIR [--out PATH]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="mdnas-report",
        description="Write a one-page Markdown report (report.md) of a search directory.",
    )
    parser.add_argument("search_dir", help="the search's --save-dir, holding genotype.json")
    parser.add_argument("--out", default=None, help="report path (default: SEARCH_DIR/report.md)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.search_dir, args.out)
    except (GenotypeError, OSError) as e:
        print(f"mdnas-report: error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
