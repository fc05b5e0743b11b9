"""The sections of a search report (:mod:`mdnas_fairseq.viz.report`): number formats, parameter
counts, drawings, heatmaps, the alpha history, the per-epoch genotypes and the decisiveness."""

from __future__ import annotations

import glob
import json
import math
import os
import re
from typing import Any, Dict, List, Sequence

from ..search.genotype import (
    GenotypeError,
    MultiDomainGenotype,
    genotype_from_dict,
    read_genotype_json,
)
from .draw import (
    DEFAULT_FORMATS,
    GraphvizNotInstalledError,
    diagram_path_stems,
    draw_genotype,
    input_state_labels,
    union_key,
)
from .heatmap import heatmap_paths, save_alpha_heatmaps
from .history import (
    decisiveness_series,
    plot_alpha_history,
    plot_decisiveness,
    read_alpha_history,
)

GENOTYPE_FILE = "genotype.json"
HISTORY_FILE = "alpha_history.jsonl"
EPOCH_GENOTYPES_GLOB = os.path.join("genotypes", "genotype_epoch*.json")
FIGURES_DIR = "figures"
REPORT_FILE = "report.md"
MAX_EPOCH_ROWS = 25


# ------------------------------------------------------------------------------ formatting


def _cell(value: Any) -> str:
    """Text for one Markdown table cell (pipes escaped, one line)."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def format_number(value: Any) -> str:
    """Integers as they are, floats with 6 significant digits, anything else as text."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_setting(value: Any) -> str:
    """A setting as written in the run's config: lists comma-joined, numbers and flags as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def format_percent(share: float) -> str:
    return f"{100.0 * share:.1f}%"


def _state_label(genotype: MultiDomainGenotype, state: int) -> str:
    labels = input_state_labels(genotype.space)
    if state < len(labels):
        return f"{state} (`{labels[state]}`)"
    return str(state)


def _missing(field: str, source: str) -> str:
    return f"_Not available: field `{field}` is missing from `{source}`._"


# ------------------------------------------------------------------------------ numbers
def agreement_counts(genotype: MultiDomainGenotype) -> Dict[str, int]:
    """Union edges, edges where all domains chose the same op, and the (edge, op) module counts."""
    union = genotype.union()
    agreed = sum(
        1
        for ops in union.values()
        if len(ops) == 1 and len(next(iter(ops.values()))) == genotype.num_domains
    )
    modules = genotype.union_edges()
    shared = sum(1 for ops in union.values() for users in ops.values() if len(users) > 1)
    return {
        "union_edges": len(union),
        "agreed_edges": agreed,
        "distinct_modules": len(modules),
        "chosen_modules": sum(len(cell) for cell in genotype.cells.values()),
        "shared_modules": shared,
    }


def _param_counts(data: Dict[str, Any], genotype: MultiDomainGenotype, source: str) -> List[str]:
    """The parameter count section, or a line saying which part of ``param_counts`` is missing."""
    counts = agreement_counts(genotype)
    module_line = (
        f"Cell operation modules: **{counts['distinct_modules']}** distinct (edge, op) modules in the "
        f"multimodel, for {counts['chosen_modules']} (edge, op) choices over the {genotype.num_domains} "
        f"domain(s); {counts['shared_modules']} module(s) shared by several domains."
    )
    if "param_counts" not in data:
        return [_missing("param_counts", source), "", module_line, ""]
    pc = data["param_counts"]
    if not isinstance(pc, dict):
        return [
            f"_Not available: field `param_counts` of `{source}` is not an object._",
            "",
            module_line,
            "",
        ]
    rows = []
    notes = []
    per_domain = pc.get("domains")
    if isinstance(per_domain, dict):
        for domain in genotype.domains:
            if domain in per_domain:
                rows.append([f"domain {domain} alone", format_number(per_domain[domain])])
            else:
                notes.append(
                    f"_No count for domain {domain}: `param_counts.domains.{domain}` is missing._"
                )
        numbers = [
            per_domain[d] for d in genotype.domains if isinstance(per_domain.get(d), (int, float))
        ]
        if len(numbers) == genotype.num_domains and genotype.num_domains > 1:
            rows.append(
                [
                    f"{genotype.num_domains} separate single-domain models (sum)",
                    format_number(sum(numbers)),
                ]
            )
    else:
        notes.append(_missing("param_counts.domains", source))
    if "multimodel" in pc:
        rows.append(
            [
                "**concordant multimodel** (union of all domains)",
                f"**{format_number(pc['multimodel'])}**",
            ]
        )
    else:
        notes.append(_missing("param_counts.multimodel", source))
    lines = _table(["model", "parameters"], rows) if rows else []
    for note in notes:
        lines += [note, ""]
    return lines + [module_line, ""]


# ------------------------------------------------------------------------------ figures
def _fresh(paths: Sequence[str], source_mtime: float) -> bool:
    """Every path exists and is not older than the source it was drawn from."""
    return all(os.path.isfile(p) and os.path.getmtime(p) >= source_mtime for p in paths)


def _link(path: str, report_dir: str) -> str:
    return os.path.relpath(path, report_dir).replace(os.sep, "/")


def _diagram_section(genotype, figures_dir, source_mtime, report_dir) -> List[str]:
    stems = diagram_path_stems(genotype, figures_dir)
    expected = {key: [f"{stem}.{fmt}" for fmt in DEFAULT_FORMATS] for key, stem in stems.items()}
    if not _fresh([p for paths in expected.values() for p in paths], source_mtime):
        try:
            draw_genotype(genotype, figures_dir, formats=DEFAULT_FORMATS)
        except GraphvizNotInstalledError as e:
            return [f"_Cell diagrams not drawn: {e}._", ""]
        except (RuntimeError, OSError) as e:
            return [f"_Cell diagrams not drawn: {e}_", ""]
    lines = []
    ukey = union_key(genotype)
    for key in [ukey] + list(genotype.domains):
        png, svg = expected[key]
        title = "concordant union" if key == ukey else f"domain {key}"
        lines += [
            f"**{title}** ([svg]({_link(svg, report_dir)}))",
            "",
            f"![{title}]({_link(png, report_dir)})",
            "",
        ]
    return lines


def _heatmap_section(data, genotype, figures_dir, source, source_mtime, report_dir) -> List[str]:
    if "alpha" not in data:
        return [_missing("alpha", source) + " No heatmaps.", ""]
    paths = heatmap_paths(genotype.domains, figures_dir)
    if not _fresh(list(paths.values()), source_mtime):
        try:
            save_alpha_heatmaps(data["alpha"], genotype.space, genotype.domains, figures_dir)
        except (ValueError, ImportError, OSError) as e:
            return [f"_Heatmaps not drawn: {e}_", ""]
    lines = []
    for domain, path in paths.items():
        lines += [f"![softmax(alpha) of domain {domain}]({_link(path, report_dir)})", ""]
    return lines


def _history_section(search_dir, genotype, figures_dir, report_dir) -> List[str]:
    history = os.path.join(search_dir, HISTORY_FILE)
    if not os.path.isfile(history):
        return [f"_Not available: `{HISTORY_FILE}` is missing from the search directory._", ""]
    out_png = os.path.join(figures_dir, "alpha_history.png")
    if not _fresh([out_png], os.path.getmtime(history)):
        try:
            plot_alpha_history(history, out_png, operations=genotype.space.operations)
        except (ValueError, ImportError, OSError) as e:
            return [f"_Alpha history not plotted: {e}_", ""]
    return [f"![softmax(alpha) over epochs]({_link(out_png, report_dir)})", ""]


# ------------------------------------------------------------------------------ epochs
def _epoch_of(path: str) -> int:
    match = re.search(r"genotype_epoch(\d+)\.json$", path)
    return int(match.group(1)) if match else -1


def _epochs_section(search_dir: str) -> List[str]:
    paths = sorted(glob.glob(os.path.join(search_dir, EPOCH_GENOTYPES_GLOB)), key=_epoch_of)
    paths = [p for p in paths if _epoch_of(p) >= 0]
    if not paths:
        return [f"_No per-epoch genotypes (`{EPOCH_GENOTYPES_GLOB}`) in the search directory._", ""]
    shown = _evenly(paths)
    note = []
    if len(shown) < len(paths):
        note = [f"_{len(paths)} epochs saved; {MAX_EPOCH_ROWS} shown, evenly spaced._", ""]
    rows = []
    for path in shown:
        rel = os.path.relpath(path, search_dir)
        try:
            data = read_genotype_json(path)
            genotype = genotype_from_dict(data, source=rel)
        except GenotypeError as e:
            rows.append([_epoch_of(path), f"unreadable: {e}", "", ""])
            continue
        counts = agreement_counts(genotype)
        pc = data.get("param_counts")
        multimodel = pc.get("multimodel", "n/a") if isinstance(pc, dict) else "n/a"
        rows.append(
            [
                _epoch_of(path),
                f"{format_percent(genotype.agreement())} ({counts['agreed_edges']}/{counts['union_edges']})",
                counts["distinct_modules"],
                format_number(multimodel),
            ]
        )
    return (
        _table(["epoch", "agreement", "distinct (edge, op) modules", "multimodel parameters"], rows)
        + note
    )


def _evenly(items: Sequence[Any]) -> List[Any]:
    if len(items) <= MAX_EPOCH_ROWS:
        return list(items)
    step = (len(items) - 1) / (MAX_EPOCH_ROWS - 1)
    return [items[round(k * step)] for k in range(MAX_EPOCH_ROWS)]


def _decisiveness_section(search_dir, genotype, figures_dir, report_dir) -> List[str]:
    """Per epoch and domain: mean edge entropy and margin of softmax(alpha), a table and a plot."""
    history = os.path.join(search_dir, HISTORY_FILE)
    if not os.path.isfile(history):
        return [f"_Not available: `{HISTORY_FILE}` is missing from the search directory._", ""]
    space = genotype.space
    try:
        domains, series = decisiveness_series(
            read_alpha_history(history), space, source=HISTORY_FILE
        )
    except (ValueError, OSError) as e:
        return [f"_Decisiveness not computed: {e}_", ""]
    lines = [
        f"Per domain and epoch, from `{HISTORY_FILE}`: **entropy** = mean over the {space.num_edges} edges of "
        f"the entropy of softmax(alpha) over all {space.num_ops} operations (nats; uniform = "
        f"{format_number(math.log(space.num_ops))}, decided = 0); **margin** = mean over edges of the best "
        f"minus the second-best weight among the operations other than `{space.none_op}` (0 = undecided, "
        f"1 = one-hot).",
        "",
    ]
    epochs = sorted({e for d in domains for e in series[d][0]})
    shown = _evenly(epochs)
    header = ["epoch"] + [f"{name} {d}" for d in domains for name in ("entropy", "margin")]
    rows = []
    for epoch in shown:
        row = [epoch]
        for d in domains:
            values = dict(zip(series[d][0], zip(series[d][1].tolist(), series[d][2].tolist())))
            row += [f"{v:.4f}" for v in values[epoch]] if epoch in values else ["", ""]
        rows.append(row)
    lines += _table(header, rows)
    if len(shown) < len(epochs):
        lines += [f"_{len(epochs)} epochs in the history; {len(shown)} shown, evenly spaced._", ""]
    out_png = os.path.join(figures_dir, "decisiveness.png")
    if not _fresh([out_png], os.path.getmtime(history)):
        try:
            plot_decisiveness(history, out_png, space)
        except (ValueError, ImportError, OSError) as e:
            return lines + [f"_Decisiveness not plotted: {e}_", ""]
    return lines + [
        f"![entropy and margin of softmax(alpha) over epochs]({_link(out_png, report_dir)})",
        "",
    ]


# ------------------------------------------------------------------------------ report
