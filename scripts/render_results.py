#!/usr/bin/env python
"""Render every table of figures in README.md and docs/*.md from its results file under results/.

Inputs: the pages (README.md, docs/*.md) and the results files their tables name (JSON written by
scripts/lm_pipeline.py, scripts/rotated_mnist_table.py, scripts/sweep.py, scripts/extend_table.py,
or small JSON files that record figures with their command, commit, seed and date; the benchmarks'
text outputs). Output: the pages, rewritten in place between the markers

    <!-- render: NAME -->
    ...the table, generated...
    <!-- /render: NAME -->

where NAME is a key of TABLES below (what it shows and from which file). Nothing outside the
markers changes. A figure in a rendered table is never typed by hand: change the results file and
run this script (``make render``).

``--check`` rewrites nothing and exits 1 naming every table whose text differs from what its
results file gives (tests/unit/test_render_results.py runs it); ``--list`` prints each table's name
and sources.

Example: ``python scripts/render_results.py`` (rewrite), ``python scripts/render_results.py --check``.
"""

import argparse
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", "docs/*.md"]
MARKER = re.compile(
    r"(?P<open><!-- render: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(?P<close><!-- /render: (?P=name) -->)",
    re.S,
)


def load(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return json.load(f)


def num(x, digits=2):
    return f"{x:,.{digits}f}"


def count(x):
    return f"{round(x):,}"


def mean_std(mean, std, digits=2, best=None):
    text = f"{mean:,.{digits}f} ± {std:,.{digits}f}"
    return text + (f" ({best:,.{digits}f})" if best is not None else "")


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(path, data=None):
    """One line naming a results file and what it records of its making."""
    data = data if data is not None else {}
    parts = [f"`{path}`"]
    if data.get("commit"):
        parts.append(f"commit {data['commit']}")
    seed = data.get("seed", (data.get("settings") or {}).get("seed"))
    if seed is not None:
        parts.append(f"seed {seed}")
    if data.get("date"):
        parts.append(str(data["date"]))
    return ", ".join(parts)


def sources_line(sources):
    return "Rendered from " + "; ".join(provenance(p, d) for p, d in sources) + "."


# ---------------------------------------------------------------- language models (lm_pipeline)


def lm_label(row):
    if row["model"] == "random":
        n = len(row["runs"]) if "runs" in row else row["random_count"]
        return f"random, mean ± std of {n} (best)"
    if row["model"] == "baseline":
        return f"baseline (fairseq `{row.get('arch', 'transformer_lm')}`)"
    return row["model"]


def lm_ppl(row, d):
    if d not in row["test_ppl"]:
        return "-"
    if "test_ppl_std" in row:
        return mean_std(row["test_ppl"][d], row["test_ppl_std"][d], best=row["test_ppl_best"][d])
    return num(row["test_ppl"][d])


def lm_agreed(row):
    a = row.get("agreement_edges")
    if a is None or len(row["domains"]) < 2 or row["model"] in ("union", "random", "baseline"):
        return "-"
    return f"{100 * a:.0f}%"


def lm_margin(row):
    """Mean over domains of the final softmax(alpha)'s best-minus-second margin (searched rows)."""
    found = [v["margin"] for v in (row.get("decisiveness") or {}).values()]
    return f"{sum(found) / len(found):.3f}" if found and row["model"] != "union" else "-"


def lm_rows(specs, domains=("en", "de"), margin=False):
    """specs: (first column or None, results file, model name or None for every row, label or
    None). A table of test perplexity per domain, parameters, cell parameters (where the file
    records them) and the share of edges the domains agreed on; with ``margin``, how decided the
    search ended (the mean over domains of the best-minus-second margin of softmax(alpha))."""
    seen, rows = [], []
    lead = any(s[0] is not None for s in specs)
    cell = False
    for first, path, model, label in specs:
        data = load(path)
        if (path, data) not in seen:
            seen.append((path, data))
        picked = [r for r in data["rows"] if model is None or r["model"] == model]
        if not picked:
            raise SystemExit(f"{path}: no row of model {model!r}")
        for r in picked:
            cell = cell or r.get("cell_params") is not None
            rows.append((first, label or lm_label(r), r))
    header = (["seed"] if lead else []) + ["model"] + [f"{d} ppl" for d in domains] + ["params"]
    header += (["cell params"] if cell else []) + ["edges agreed"]
    header += ["alpha margin"] if margin else []
    body = []
    for first, label, r in rows:
        line = ([first] if lead else []) + [label] + [lm_ppl(r, d) for d in domains]
        line.append(count(r["params"]))
        if cell:
            line.append("-" if r.get("cell_params") is None else count(r["cell_params"]))
        body.append(line + [lm_agreed(r)] + ([lm_margin(r)] if margin else []))
    return md_table(header, body) + "\n\n" + sources_line(seen)


# ---------------------------------------------------------------- vision (rotated_mnist_table)


def vision_seed_table(path):
    """The seed's table against ours (scripts/rotated_mnist_table.py's rows)."""
    data = load(path)
    body = []
    for r in data["rows"]:
        body.append(
            [
                r["D"],
                r["label"],
                num(r["seed_acc"]),
                mean_std(r["acc_mean"], r["acc_std"]),
                count(r["seed_params"]),
                mean_std(r["params_mean"], r["params_std"], digits=0),
                "yes" if r["acc_ok"] else "no",
                "yes" if r["params_ok"] else "no",
            ]
        )
    header = ["domains", "model", "seed acc", "our acc", "seed params", "our params"]
    header += ["acc >= seed", "params <= seed"]
    return md_table(header, body) + "\n\n" + sources_line([(path, data)])


def seed_paper_vision(path):
    """The seed paper's rotated-MNIST figures, as scripts/rotated_mnist_table.py records them."""
    data = load(path)
    body = [[r["D"], r["label"], num(r["seed_acc"]), count(r["seed_params"])] for r in data["rows"]]
    table = md_table(["domains", "model", "accuracy", "params"], body)
    return (
        table
        + "\n\n"
        + sources_line([(path, dict(data, commit=None))])
        + " (`seed_acc`, `seed_params`)"
    )


def vision_random_table(path):
    """Accuracy (mean ± std over runs, best) and size of each row of a rotated-MNIST table."""
    data = load(path)
    body = [
        [
            r["D"],
            f"{r['label']} ({r['runs']})",
            mean_std(r["acc_mean"], r["acc_std"], best=r["acc_best"]),
            mean_std(r["params_mean"], r["params_std"], digits=0),
            count(r["cell_params_mean"]),
        ]
        for r in data["rows"]
    ]
    header = ["D", "model (runs)", "accuracy, mean ± std (best)", "params, mean ± std"]
    return md_table(header + ["cell params"], body) + "\n\n" + sources_line([(path, data)])


# ---------------------------------------------------------------- the sweep (scripts/sweep.py)


def sweep_label(s):
    if s["kind"] == "budget":
        return f"budget {s['budget']:,}"
    if s["kind"] == "reference":
        return f"{s['model']} (reference)"
    label = f"struct {s['struct_coef']:g}"
    return label + (f", contr {s['contrastive_coef']:g}" if s.get("contrastive_coef") else "")


def spread(pair, digits, scale=1.0, suffix="", runs=2):
    mean, std = pair
    if std is None or runs < 2:
        return f"{scale * mean:,.{digits}f}{suffix}"
    return f"{scale * mean:,.{digits}f}{suffix} ± {scale * std:,.{digits}f}"


def sweep_table(path):
    """Quality and size of every coefficient, reference and budget of a sweep (its summary)."""
    data = load(path)
    metric, domains = data["metric"], data["domains"]
    unit = "ppl" if metric == "ppl" else "acc"
    header = ["run", "runs", "params", "agreement"] + [f"{unit} {d}" for d in domains]
    header.append(f"{unit}, mean over domains")
    body = []
    for s in data["summary"]:
        n = s["runs"]
        line = [sweep_label(s), n, spread(s["params"], 0, runs=n)]
        agree = s.get("agreement")
        line.append("-" if not agree or agree[0] is None else spread(agree, 0, 100, "%", n))
        per = s[f"{metric}_per_domain"]
        line += [spread(per[d], 2, runs=n) if d in per else "-" for d in domains]
        body.append(line + [spread(s[metric], 2, runs=n)])
    data = dict(data, seed=None)
    return md_table(header, body) + "\n\n" + sources_line([(path, data)])


# ---------------------------------------------------------------- extension (extend_table)


def extend_table_of(path):
    """One scripts/extend_table.py table.json: every row's perplexities, size and time."""
    data = load(path)
    settings = data["settings"]
    langs = list(settings["base_langs"]) + list(settings["new_langs"])
    body = []
    for r in data["rows"]:
        search = r.get("search_seconds")
        body.append(
            [r["row"], r["model"]]
            + [num(r["test_ppl"][d]) if d in r["test_ppl"] else "-" for d in langs]
            + [
                count(r["params"]),
                "-" if search is None else count(search),
                count(r["retrain_seconds"]),
            ]
        )
    header = ["row", "model"] + [f"{d} ppl" for d in langs] + ["params", "search s", "retrain s"]
    notes = (
        f"{settings['arch']}: parameters added by the extension {data['params_added']:,}; "
        f"old languages' perplexities equal the base model's: "
        f"{'yes' if data['old_equal'] else 'NO'}."
    )
    return md_table(header, body) + "\n\n" + notes + " " + sources_line([(path, data)])


def extend_tables(pattern="results/extend/*/seed*/table.json"):
    """Every committed extension table (issue 24), or a line saying there is none yet."""
    paths = sorted(
        os.path.relpath(p, ROOT).replace(os.sep, "/")
        for p in glob.glob(os.path.join(ROOT, pattern))
    )
    if not paths:
        return (
            f"No extension results are committed yet (`{pattern}`, written by "
            "`scripts/extend_table.py`); this table appears when they are."
        )
    return "\n\n".join(extend_table_of(p) for p in paths)


def extend_summary(pattern="results/extend/*/seed*/table.json"):
    """One line per committed extension table: each new language's test perplexity extended /
    joint / union / size-matched single model, the parameters added against the joint run's, and
    the extension's minutes (search + retrain) against the joint run's."""
    paths = sorted(
        os.path.relpath(p, ROOT).replace(os.sep, "/")
        for p in glob.glob(os.path.join(ROOT, pattern))
    )
    if not paths:
        return extend_tables(pattern)
    body, sources, new_langs = [], [], None
    for path in paths:
        data = load(path)
        settings = data["settings"]
        if new_langs is None:
            new_langs = list(settings["new_langs"])
        elif list(settings["new_langs"]) != new_langs:
            raise SystemExit(
                f"{path}: new languages {settings['new_langs']} differ from {new_langs}"
            )
        by = {r["row"]: r for r in data["rows"]}
        ext, joint, union = by["extended"], by["joint"], by["union"]
        cells = []
        for d in new_langs:
            sized = by[f"single_{d}_sized"]
            cells.append(" / ".join(num(r["test_ppl"][d]) for r in (ext, joint, union, sized)))
        minutes = [(r["search_seconds"] + r["retrain_seconds"]) / 60 for r in (ext, joint)]
        body.append(
            [f"{settings['arch']}, seed {data['seed']}"]
            + cells
            + [
                f"{data['params_added']:,} of {joint['params']:,}",
                f"{minutes[0]:.0f} / {minutes[1]:.0f}",
                "yes" if data["old_equal"] else "NO",
            ]
        )
        sources.append((path, data))
    header = (
        ["space, seed"]
        + [f"{d} ppl: extended / joint / union / single of the added size" for d in new_langs]
        + ["params added (joint model's)", "minutes: extension / joint", "old languages unchanged"]
    )
    return md_table(header, body) + "\n\n" + sources_line(sources)


# ---------------------------------------------------------------- real-scale tables (issue 26)

REAL_PATTERN = "results/real/*/*/seed*/table.json"
SEARCHED = ("multi", "multi_struct", "multi_contr", "perturbation")


def real_paths(pattern=REAL_PATTERN):
    return sorted(
        os.path.relpath(p, ROOT).replace(os.sep, "/")
        for p in glob.glob(os.path.join(ROOT, pattern))
    )


def real_key(path):
    """(table, space, seed folder) of results/real/TABLE/SPACE/seedN/table.json."""
    return tuple(path.split("/")[-4:-1])


def real_domains(data):
    """The table's domains, in the order of its first row with every domain."""
    return max((r["domains"] for r in data["rows"]), key=len)


def real_minutes(r, rows):
    """A row's minutes from nothing to its retrained model: search, selection and retrain; a
    selection that reuses another row's search (``reference``: perturbation) counts that search."""
    seconds = sum(
        r.get(k) or 0.0 for k in ("search_seconds", "selection_seconds", "retrain_seconds")
    )
    if r.get("reference"):
        seconds += (
            next(x for x in rows if x["model"] == r["reference"]).get("search_seconds") or 0.0
        )
    return seconds / 60


def real_table_of(path):
    """One scripts/lm_pipeline.py --protocol real table.json: per row the test perplexity per
    domain (random: mean ± std over its genotypes, best), parameters and minutes."""
    data = load(path)
    domains = real_domains(data)
    body = []
    for r in data["rows"]:
        minutes = f"{real_minutes(r, data['rows']):.0f}"
        body.append([lm_label(r)] + [lm_ppl(r, d) for d in domains] + [count(r["params"]), minutes])
    header = ["model"] + [f"{d} ppl" for d in domains] + ["params", "minutes"]
    table, space, seed = real_key(path)
    head = f"Table {table}, {space} space, {seed}: domains {', '.join(domains)}."
    return head + "\n\n" + md_table(header, body) + "\n\n" + sources_line([(path, data)])


def real_tables(pattern=REAL_PATTERN):
    """Every committed real-scale table, or a line saying there is none yet."""
    paths = real_paths(pattern)
    if not paths:
        return (
            f"No real-scale results are committed yet (`{pattern}`, written by "
            "`scripts/real_table.sh`); this table appears when they are."
        )
    return "\n\n".join(real_table_of(p) for p in paths)


def average_ppl(ppl, domains):
    return sum(ppl[d] for d in domains) / len(domains)


def real_verdict(pattern=REAL_PATTERN):
    """Does the search pay? Per real table: each searched row's perplexity averaged over the
    domains against the random multimodels' (mean, standard deviation over genotypes of the same
    average), the margin in those standard deviations (positive: the searched row is better), and
    the union's and the size-matched fairseq baseline's averages, with parameters and minutes."""
    paths = real_paths(pattern)
    if not paths:
        return real_tables(pattern)
    body, sources = [], []
    for path in paths:
        data = load(path)
        domains = real_domains(data)
        by = {r["model"]: r for r in data["rows"]}
        rnd = by.get("random")
        runs = [average_ppl(run["test_ppl"], domains) for run in (rnd or {}).get("runs", [])]
        if len(runs) < 2:
            raise SystemExit(f"{path}: fewer than two random genotypes; no verdict")
        mean = sum(runs) / len(runs)
        std = (sum((x - mean) ** 2 for x in runs) / (len(runs) - 1)) ** 0.5
        union, base = by.get("union"), by.get("baseline")
        table, space, seed = real_key(path)
        for model in SEARCHED:
            r = by.get(model)
            if r is None:
                continue
            avg = average_ppl(r["test_ppl"], domains)
            body.append(
                [
                    f"{table}, {space}, {seed}",
                    model,
                    f"{num(avg)} ({count(r['params'])})",
                    f"{num(mean)} ± {num(std)} ({count(rnd['params'])})",
                    f"{(mean - avg) / std:+.2f}" if std > 0 else "-",
                    "-"
                    if union is None
                    else f"{num(average_ppl(union['test_ppl'], domains))} "
                    f"({count(union['params'])})",
                    "-"
                    if base is None
                    else f"{num(average_ppl(base['test_ppl'], domains))} ({count(base['params'])})",
                    f"{real_minutes(r, data['rows']):.0f}",
                ]
            )
        sources.append((path, data))
    header = [
        "table, space, seed",
        "searched row",
        "avg ppl (params)",
        "random: mean ± std (params)",
        "margin in std",
        "union (params)",
        "fairseq baseline (params)",
        "minutes",
    ]
    return md_table(header, body) + "\n\n" + sources_line(sources)


# ---------------------------------------------------------------- translation (translation_table)


def translation_verdict(path, struct_row="multi_struct"):
    """Issue 27's goals on one translation table: per domain the struct multimodel's BLEU
    (``struct_row``: multi_struct, the argmax genotype of one search, or multi_struct_selected,
    chosen among searches on valid) and, for each other row, its BLEU with the struct row's lead
    (struct minus it); the random rows as their mean; the mean over domains; then each row's
    parameters and minutes (search + training)."""
    data = load(path)
    domains = data["domains"]
    by = {r["row"]: r for r in data["rows"]}
    if struct_row not in by:
        raise SystemExit(f"{path}: no {struct_row} row; no verdict")
    randoms = [r for r in data["rows"] if r["row"].startswith("random_")]
    others = ("baseline", "union", "multi", "multi_struct")
    columns = [(struct_row, by[struct_row])]
    columns += [(name, by[name]) for name in others if name in by and name != struct_row]
    if randoms:
        bleu = {d: sum(r["bleu"][d] for r in randoms) / len(randoms) for d in domains}
        columns.append((f"random (mean of {len(randoms)})", {
            "bleu": bleu,
            "params": sum(r["params"] for r in randoms) / len(randoms),
            "search_minutes": None,
            "train_minutes": sum(r["train_minutes"] for r in randoms) / len(randoms),
        }))  # fmt: skip
    names = {"baseline": "fairseq transformer", "union": "union (one model per genre)"}
    header = ["BLEU"] + [names.get(n, n) for n, _ in columns]
    struct = by[struct_row]

    def line(label, value):
        cells = [num(value(struct))]
        cells += [f"{num(value(r))} ({value(struct) - value(r):+.2f})" for _, r in columns[1:]]
        return [label, *cells]

    body = [line(d, lambda r, d=d: r["bleu"][d]) for d in domains]
    body.append(line("mean", lambda r: sum(r["bleu"][d] for d in domains) / len(domains)))
    body.append(["params", *(count(r["params"]) for _, r in columns)])
    body.append(
        [
            "minutes (search + train)",
            *(f"{(r.get('search_minutes') or 0) + r['train_minutes']:.0f}" for _, r in columns),
        ]
    )
    return md_table(header, body) + "\n\n" + sources_line([(path, data)])


def translation_candidates(paths):
    """The multi_struct_selected rows' choice: per table its seed, each candidate search's seed
    and mean valid BLEU after the short retrain, and the search seed chosen."""
    body, sources = [], []
    for path in paths:
        data = load(path)
        row = next(r for r in data["rows"] if r["row"] == "multi_struct_selected")
        cands = row["candidates"]
        body.append(
            [
                str(data["seed"]),
                ", ".join(str(c["search_seed"]) for c in cands),
                ", ".join(num(c["valid_bleu_mean"]) for c in cands),
                str(row["search_seed"]),
            ]
        )
        sources.append((path, data))
    header = ["seed", "candidate search seeds", "mean valid BLEU (short retrain)", "chosen"]
    return md_table(header, body) + "\n\n" + sources_line(sources)


# ---------------------------------------------------------------- benchmark text outputs


MT_TABLE = "results/translation/gettext/seed{}/table.{}"


def text_lines(path, start, stop=None, nth=0, before=0):
    """The lines of a text results file from the ``nth`` line matching ``start`` (a regex; with
    ``before`` lines above it) up to the first later line matching ``stop`` (excluded; default:
    a blank line)."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        lines = f.read().splitlines()
    starts = [i for i, line in enumerate(lines) if re.search(start, line)]
    if not starts or len(starts) <= nth:
        raise SystemExit(f"{path}: fewer than {nth + 1} lines match {start!r}")
    out = lines[starts[nth] - before : starts[nth] + 1]
    for later in lines[starts[nth] + 1 :]:
        if re.search(stop, later) if stop else not later.strip():
            break
        out.append(later)
    return out


def excerpt(path, start, stop=None):
    """Lines of a text results file, verbatim, in a code block."""
    lines = text_lines(path, start, stop)
    return "```\n" + "\n".join(lines) + "\n```\n\nCopied from `" + path + "`."


def text_table(path, start, stop=None, nth=0, source=True):
    """A fixed-width table of a text results file (columns split at two or more spaces) as a
    markdown table."""
    lines = [line for line in text_lines(path, start, stop, nth) if line.strip()]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines]
    table = md_table(rows[0], rows[1:])
    return table + ("\n\nRendered from `" + path + "`." if source else "")


def fairseq_train_speed(path="results/speed/lm_search_speed.txt"):
    """benchmarks/lm_search_speed.py --fairseq-train's words/s block (the last one in the file): a
    row per run, a column per hidden size, words/s and the ratio to lstm_lm's."""
    lines = text_lines(path, r"^fairseq-train words/s", r"^goals|^$", nth=-1)
    cells, hidden, order = {}, None, []
    for line in lines[2:]:
        head = re.match(r"^hidden (\d+):$", line.strip())
        if head:
            hidden = head.group(1)
            continue
        parts = re.split(r"\s{2,}", line.strip())
        if hidden is None or len(parts) != 4:
            raise SystemExit(f"{path}: unexpected line in the fairseq-train block: {line!r}")
        run, words, ratio = parts[0], int(parts[1]), parts[2]
        if run not in order:
            order.append(run)
        cells[(run, hidden)] = f"{words:,} ({ratio}x)"
    sizes = sorted({h for _, h in cells}, key=int)
    rows = [[run] + [cells.get((run, h), "-") for h in sizes] for run in order]
    table = md_table(
        ["fairseq-train, 1 thread"] + [f"hidden {h}: words/s (x lstm_lm)" for h in sizes], rows
    )
    return table + "\n\nRendered from `" + path + "` (" + lines[0].strip() + ")."


def step_tables(path, count):
    """The first ``count`` step tables of benchmarks/lm_search_speed.py's output, each under its
    setting line and above its second/first-order and goals lines."""
    parts = []
    for nth in range(count):
        title = text_lines(path, r"^step\s+tokens/s", nth=nth, before=1)[0]
        table = text_table(path, r"^step\s+tokens/s", r"^second/first|^$", nth, source=False)
        notes = text_lines(path, r"^second/first order", r"^$|^\s*\[", nth=2 * nth)
        parts.append(f"{title}:\n\n{table}\n\n```\n" + "\n".join(notes) + "\n```")
    return "\n\n".join(parts) + "\n\nRendered from `" + path + "`."


def gpu_speed(path="results/lm_search_speed_gpu.txt"):
    """The GPU run of benchmarks/lm_search_speed.py: its four step tables (eager and compiled
    cell, hidden 32 and 256), each under its setting line, and its fairseq-train words/s."""
    parts = []
    for nth in range(4):
        title = text_lines(path, r"^step\s+tokens/s", nth=nth, before=1)[0]
        table = text_table(path, r"^step\s+tokens/s", r"^second/first|^$", nth, source=False)
        parts.append(f"{title}:\n\n{table}")
    words = text_lines(path, r"^fairseq-train words/s", r"^$")
    parts.append("```\n" + "\n".join(words) + "\n```")
    return "\n\n".join(parts) + "\n\nRendered from `" + path + "`."


# ---------------------------------------------------------------- the tables

RNN = "results/lm_random"
TABLES = {
    # make demo (README, docs/results.md)
    "demo": lambda: lm_rows([(None, "results/demo/table.json", None, None)]),
    # the recurrent search against random multimodels of its size
    "lm-random": lambda: lm_rows(
        [
            (str(s), f"{RNN}/seed{s}.json", m, None)
            for s in (1, 2)
            for m in ("multi_struct", "random")
        ]
    ),
    "lm-random-no-alpha-decay": lambda: lm_rows(
        [
            ("1", f"{RNN}/seed1_no_alpha_decay.json", "multi_struct", None),
            ("1", f"{RNN}/seed1_no_alpha_decay_random.json", "random", None),
        ],
        margin=True,
    ),
    "lm-random-struct0": lambda: lm_rows(
        [
            (str(s), f"{RNN}/seed{s}_struct0_no_alpha_decay{tail}.json", m, None)
            for s in (1, 2, 3)
            for tail, m in (("", "multi_struct"), ("_random", "random"))
        ],
        margin=True,
    ),
    "lm-random-struct001": lambda: lm_rows(
        [
            (str(s), f"{RNN}/seed{s}_struct001_no_alpha_decay{tail}.json", m, None)
            for s in (1, 2)
            for tail, m in (("", "multi_struct"), ("_random", "random"))
        ],
        margin=True,
    ),
    "lm-second-order": lambda: lm_rows(
        [("1", f"{RNN}/seed1_second_order.json", "multi_struct", "multi_struct, default settings")]
        + [
            (
                str(s),
                f"{RNN}/seed{s}_second_order_struct0_no_alpha_decay.json",
                "multi_struct",
                "multi_struct, struct 0, alpha weight decay 0",
            )
            for s in (1, 2, 3)
        ],
        margin=True,
    ),
    # the 48-dim table of scripts/run_lm_table.sh
    "lm48-seed1": lambda: lm_rows([(None, "results/lm_table_seed1/table.json", None, None)]),
    "lm48-seed2": lambda: lm_rows(
        [
            (None, "results/lm_table_seed2/table.json", None, None),
            (None, "results/lm_table_seed2/random_table.json", None, None),
        ]
    ),
    # the searchable Transformer LM at the demo's protocol, two seeds
    "transformer": lambda: lm_rows(
        [(str(s), f"results/transformer_table/seed{s}.json", None, None) for s in (1, 2)]
        + [
            (str(s), f"{RNN}/seed{s}.json", "multi_struct", "recurrent multi_struct (rnn_tiny)")
            for s in (1, 2)
        ]
    ),
    # rotated MNIST
    "seed-paper-vision": lambda: seed_paper_vision("results/rotated_mnist/table.json"),
    "vision-seed-table": lambda: vision_seed_table("results/rotated_mnist/table.json"),
    "vision-random-d2": lambda: vision_random_table("results/rotated_mnist_random/table.json"),
    "vision-random-d4": lambda: vision_random_table("results/rotated_mnist_random/D4/table.json"),
    # the sweeps
    "sweep-vision-d2": lambda: sweep_table("results/sweep/vision_D2/sweep.json"),
    "sweep-vision-d4": lambda: sweep_table("results/sweep/vision_D4/sweep.json"),
    "sweep-lm": lambda: sweep_table("results/sweep/lm/sweep.json"),
    # extending a multimodel (issue 24)
    "extend": extend_tables,
    "extend-summary": extend_summary,
    "real": real_tables,
    "real-verdict": real_verdict,
    # the translation tables (issue 27): scripts/translation_table.py's own markdown table, and
    # the goals' view of it
    **{
        f"translation-gettext-seed{s}": lambda s=s: "\n".join(
            text_lines(MT_TABLE.format(s, "md"), r"^\| row \|")
            + ["", f"Copied from `{MT_TABLE.format(s, 'md')}`."]
        )
        for s in (1, 2)
    },
    **{
        f"translation-verdict-seed{s}": lambda s=s: translation_verdict(MT_TABLE.format(s, "json"))
        for s in (1, 2)
    },
    "translation-candidates": lambda: translation_candidates(
        [MT_TABLE.format(s, "json") for s in (1, 2)]
    ),
    **{
        f"translation-selected-seed{s}": lambda s=s: translation_verdict(
            MT_TABLE.format(s, "json"), "multi_struct_selected"
        )
        for s in (1, 2)
    },
    # speed and memory (benchmarks/)
    "speed-cpu": lambda: step_tables("results/speed/lm_search_speed.txt", 2),
    "speed-fairseq-train": fairseq_train_speed,
    "speed-gpu": gpu_speed,
    "transformer-memory": lambda: text_table("results/transformer_memory.txt", r"^model\s+params"),
    "transformer-memory-length": lambda: text_table(
        "results/transformer_memory_length.txt", r"^model\s+T=64"
    ),
    "transformer-memory-length-ops": lambda: text_table(
        "results/transformer_memory_length.txt", r"^op\s+T=64", r"^\("
    ),
    "transformer-speed": lambda: text_table(
        "results/transformer_speed.txt", r"^step\s+tokens/s", r"^second/first"
    ),
}


def render(text, tables=None, only_known=True):
    """``text`` with every marked table replaced by its rendering; returns (text, names)."""
    tables = TABLES if tables is None else tables
    names = []

    def sub(m):
        name = m.group("name")
        if name not in tables:
            if only_known:
                raise SystemExit(f"unknown table {name!r} (known: {', '.join(sorted(tables))})")
            return m.group(0)
        names.append(name)
        return m.group("open") + tables[name]().rstrip("\n") + "\n" + m.group("close")

    return MARKER.sub(sub, text), names


def pages():
    found = []
    for pattern in PAGES:
        found += sorted(glob.glob(os.path.join(ROOT, pattern)))
    return found


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="rewrite nothing; exit 1 naming each table that differs from its results file",
    )
    p.add_argument("--list", action="store_true", help="print the known tables and exit")
    p.add_argument(
        "pages",
        nargs="*",
        help="pages to render (default: README.md and docs/*.md of the checkout)",
    )
    a = p.parse_args(argv)
    if a.list:
        for name in TABLES:
            print(name)
        return 0
    stale = []
    for path in a.pages or pages():
        with open(path, encoding="utf-8") as f:
            old = f.read()
        new, names = render(old)
        if new == old:
            continue
        for m_old, m_new in zip(MARKER.finditer(old), MARKER.finditer(new)):
            if m_old.group("body") != m_new.group("body"):
                stale.append(f"{os.path.relpath(path, ROOT)}: {m_old.group('name')}")
        if not a.check:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
    verb = "differ from their results files" if a.check else "rewritten"
    for s in stale:
        print(f"{s} ({verb})")
    return 1 if a.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
