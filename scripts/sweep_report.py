"""The results of scripts/sweep.py: Pareto fronts, sweep.json, sweep.md and pareto.png.

Pure (no fairseq, no runs): it gets the finished runs' rows and writes the files, so the tests call
it on hand-made rows. A row is one retrained and tested model:

* ``kind``: ``coef`` (a point of the coefficient sweep), ``budget`` (a budgeted genotype of one
  search) or ``reference`` (the union model, the single-domain models);
* ``model``, ``struct_coef``, ``contrastive_coef``, ``seed``, ``budget`` (None but in budget rows),
  ``params`` (the retrained model's parameter count), ``params_genotype`` (the genotype's count),
  ``agreement`` (share of the union's edges on which all domains chose the same operation; None in
  the reference rows), ``shared_edges``, ``search_seconds``, ``retrain_seconds``;
* the metric (``accuracy`` for vision, ``ppl`` for lm), its mean over the row's domains, and
  ``<metric>_per_domain``;
* ``folder``: the run's folder under the sweep's output (unique: the row's id).
"""

import json
import logging
import os
import statistics

from mdnas_fairseq.search import atomic_path, atomic_write_text

METRICS = {  # task -> (metric key, higher is better, axis label)
    "vision": ("accuracy", True, "mean test accuracy over domains (%)"),
    "lm": ("ppl", False, "mean test perplexity over domains"),
}


def dominates(a, b, maximize):
    """Does ``a`` = (params, quality) dominate ``b``: no more parameters, no worse quality, better
    in one of them (quality maximised when ``maximize``, else minimised)?"""
    (pa, qa), (pb, qb) = a, b
    no_worse = qa >= qb if maximize else qa <= qb
    better = qa > qb if maximize else qa < qb
    return pa <= pb and no_worse and (pa < pb or better)


def pareto_front(points, maximize):
    """Indices of the points (params, quality) no other point dominates, by increasing parameters
    (then index). Equal points do not dominate each other: both stay."""
    keep = [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p, maximize) for j, q in enumerate(points) if j != i)
    ]
    return sorted(keep, key=lambda i: (points[i][0], i))


def dominated_count(points, front, maximize):
    """How many of ``points`` some point of ``front`` dominates."""
    return sum(1 for p in points if any(dominates(f, p, maximize) for f in front))


def mean_std(values):
    """Mean and sample standard deviation (0 for one value)."""
    values = [float(v) for v in values]
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fronts(rows, metric, maximize):
    """The Pareto fronts of the coefficient sweep's runs and of the budget runs: row folders."""
    out = {}
    for kind, name in (("coef", "coefficients"), ("budget", "budgets")):
        rs = [r for r in rows if r["kind"] == kind]
        out[name] = [
            rs[i]["folder"] for i in pareto_front([(r["params"], r[metric]) for r in rs], maximize)
        ]
    return out


def summary_groups(rows, metric, domains):
    """Mean and std over seeds of every coefficient pair, reference model and budget."""
    groups = {}
    for r in rows:
        key = (r["kind"], r["model"], r["struct_coef"], r["contrastive_coef"], r["budget"] or 0)
        groups.setdefault(key, []).append(r)
    order = {"coef": 0, "reference": 1, "budget": 2}
    out = []
    for key in sorted(groups, key=lambda k: (order[k[0]],) + k[1:4] + (-k[4],)):
        rs = groups[key]
        per = {
            d: mean_std([r[f"{metric}_per_domain"][d] for r in rs])
            for d in domains
            if all(d in r[f"{metric}_per_domain"] for r in rs)
        }
        agreement = [r["agreement"] for r in rs if r["agreement"] is not None]
        out.append(
            {
                "kind": key[0],
                "model": key[1],
                "struct_coef": key[2],
                "contrastive_coef": key[3],
                "budget": rs[0]["budget"],
                "runs": len(rs),
                "seeds": sorted(r["seed"] for r in rs),
                "params": mean_std([r["params"] for r in rs]),
                "agreement": mean_std(agreement) if agreement else None,
                metric: mean_std([r[metric] for r in rs]),
                f"{metric}_per_domain": per,
            }
        )
    return out


def _cell(values, digits=2, scale=1.0, suffix=""):
    values = [scale * v for v in values if v is not None]
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{m:,.{digits}f}{suffix}" + (f" ± {s:,.{digits}f}" if len(values) > 1 else "")


def _table(rows, metric, domains, label):
    head = (
        ["run", "runs", "params", "agreement"]
        + [f"{metric} {d}" for d in domains]
        + [f"{metric} mean"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups = {}
    for r in rows:
        groups.setdefault(label(r), []).append(r)
    for name, rs in groups.items():
        cells = [
            name,
            str(len(rs)),
            _cell([r["params"] for r in rs], 0),
            _cell([r["agreement"] for r in rs], 0, 100, "%"),
        ]
        cells += [_cell([r[f"{metric}_per_domain"].get(d) for r in rs]) for d in domains]
        lines.append("| " + " | ".join(cells + [_cell([r[metric] for r in rs])]) + " |")
    return lines


def _coef_label(r):
    return f"struct {r['struct_coef']:g}, contr {r['contrastive_coef']:g}"


def _run_label(r):
    return _coef_label(r) if r["kind"] == "coef" else f"budget {r['budget']:,}"


def markdown(data):
    """sweep.md from the sweep.json object."""
    metric, domains, rows = data["metric"], data["domains"], data["rows"]
    coef = sorted(
        (r for r in rows if r["kind"] == "coef"),
        key=lambda r: (r["struct_coef"], r["contrastive_coef"], r["seed"]),
    )
    budget = sorted((r for r in rows if r["kind"] == "budget"), key=lambda r: -r["budget"])
    refs = sorted(data["reference"], key=lambda r: (r["model"], r["seed"]))
    better = "higher" if data["higher_is_better"] else "lower"
    lines = [
        f"# Sweep: {metric} against parameters as the regularizer moves ({data['task']}; "
        f"{len(domains)} domains: {', '.join(domains)})",
        "",
        f"Command: `{data['command']}`",
        "",
        f"Summary written at commit {data['commit']}; the runs made at {run_commits(data)}; "
        f"output {data['out']} (a folder per run under points/, "
        "reference/ and budgets/, each with its genotype.json and result.json).",
        "",
        f"Protocol: {data['protocol']}",
        "",
        f"Quality: {METRICS[data['task']][2]} ({better} is better); per domain: "
        f"`{metric} <domain>`. Params: parameters of the retrained model (the sum of its "
        "parameters' sizes, equal to the genotype's count). Agreement: share of the union's "
        "edges on which all domains chose the same operation. Mean ± sample std over seeds "
        "(one run: its value).",
        "",
        "## Coefficient sweep",
        "",
    ]
    lines += _table(coef, metric, domains, _coef_label) if coef else ["(no finished point)"]
    lines += ["", "## Reference rows", "", data["reference_text"], ""]
    lines += (
        _table(refs, metric, domains, lambda r: r["model"])
        if refs
        else [
            "(none finished yet)"
            if data.get("sweep", {}).get("baselines", True)
            else "(not run: --no-baselines)"
        ]
    )
    if budget or data["skipped_budgets"]:
        src = data["budget_from"]
        lines += [
            "",
            f"## Parameter budgets (one search: struct {src['struct_coef']:g}, contr "
            f"{src['contrastive_coef']:g}, seed {src['seed']})",
            "",
        ]
        if budget:
            lines += [
                f"The search's own multimodel: {budget[0]['searched_params']:,} parameters; "
                f"the smallest possible: {budget[0]['smallest_possible_params']:,}.",
                "",
            ]
            lines += _table(
                budget, metric, domains, lambda r: f"budget {r['budget']:,} ({r['moves']} move(s))"
            )
        lines += [
            f"\nSkipped budget {s['budget']:,}: {s['reason']}" for s in data["skipped_budgets"]
        ]
    optimum = "maximised" if data["higher_is_better"] else "minimised"
    lines += ["", f"## Pareto fronts (parameters minimised, {metric} {optimum})", ""]
    by_folder = {r["folder"]: r for r in rows}
    for name, folders in data["pareto"].items():
        points = "; ".join(
            f"{by_folder[f]['params']:,} params, {metric} {by_folder[f][metric]:.2f}"
            f" ({_run_label(by_folder[f])}, seed {by_folder[f]['seed']})"
            for f in folders
        )
        lines.append(f"* {name}: {points or '-'}")
    comp = data["front_comparison"]
    if comp:
        lines.append(
            f"* the coefficient front dominates {comp['budget_dominated_by_coef']} of the "
            f"{comp['budget_front']} budget-front points; the budget front dominates "
            f"{comp['coef_dominated_by_budget']} of the {comp['coef_front']} "
            "coefficient-front points"
        )
    lines += [
        "",
        "![quality against parameters](pareto.png)",
        "",
        "## Every run",
        "",
        "| run | seed | params | agreement | "
        + " | ".join(f"{metric} {d}" for d in domains)
        + f" | {metric} mean | search s | retrain s |",
        "|" + "---|" * (7 + len(domains)),
    ]
    for r in coef + budget + refs:
        per = [
            f"{r[f'{metric}_per_domain'][d]:.2f}" if d in r[f"{metric}_per_domain"] else "-"
            for d in domains
        ]
        agree = "-" if r["agreement"] is None else f"{100 * r['agreement']:.0f}%"
        name = r["model"] if r["kind"] == "reference" else _run_label(r)
        lines.append(
            " | ".join(
                [f"| {name}", str(r["seed"]), f"{r['params']:,}", agree]
                + per
                + [
                    f"{r[metric]:.2f}",
                    f"{r['search_seconds']:.0f}",
                    f"{r['retrain_seconds']:.0f} |",
                ]
            )
        )
    if data["failed"]:
        lines += ["", "## Failed runs (running the command again retries them)", ""]
        lines += [f"* {f['what']}: {f['error']}" for f in data["failed"]]
    return "\n".join(lines) + "\n"


def run_commits(data):
    """The commits the runs were made at, as a phrase (runs of older sweeps recorded none)."""
    runs = data["rows"] + data["reference"]
    made = sorted({r["commit"] for r in runs if r.get("commit")})
    unknown = sum(1 for r in runs if not r.get("commit"))
    parts = [", ".join(made)] if made else []
    parts += [f"an unrecorded commit ({unknown} runs)"] if unknown else []
    return " and ".join(parts) or "-"


def write_outputs(out, header, rows, reference, skipped, failed, figure=True):
    """Write sweep.json, sweep.md and (``figure``) pareto.png into ``out``; returns sweep.json.
    ``header``: task, domains, command, commit, out, protocol, reference_text, settings, sweep,
    budget_from."""
    metric, maximize, _ = METRICS[header["task"]]
    front = fronts(rows, metric, maximize)
    by_folder = {r["folder"]: r for r in rows}
    pts = {k: [(by_folder[f]["params"], by_folder[f][metric]) for f in v] for k, v in front.items()}
    comparison = None
    if pts["coefficients"] and pts["budgets"]:
        comparison = {
            "coef_front": len(pts["coefficients"]),
            "budget_front": len(pts["budgets"]),
            "budget_dominated_by_coef": dominated_count(
                pts["budgets"], pts["coefficients"], maximize
            ),
            "coef_dominated_by_budget": dominated_count(
                pts["coefficients"], pts["budgets"], maximize
            ),
        }
    data = dict(
        header,
        metric=metric,
        higher_is_better=maximize,
        rows=rows,
        reference=reference,
        summary=summary_groups(rows + reference, metric, header["domains"]),
        pareto=front,
        front_comparison=comparison,
        skipped_budgets=skipped,
        failed=failed,
    )
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "sweep.json"), json.dumps(data, indent=1) + "\n")
    atomic_write_text(os.path.join(out, "sweep.md"), markdown(data))
    if figure:
        plot(data, os.path.join(out, "pareto.png"))
    return data


def plot(data, path):
    """Quality against parameters: a point per run, coefficients labelled, both fronts drawn."""
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    metric, _, ylabel = METRICS[data["task"]]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    coefs = sorted(
        {(r["struct_coef"], r["contrastive_coef"]) for r in data["rows"] if r["kind"] == "coef"}
    )
    cmap = plt.get_cmap("viridis")
    for r in data["rows"]:
        xy = (r["params"], r[metric])
        if r["kind"] == "coef":
            k = coefs.index((r["struct_coef"], r["contrastive_coef"]))
            ax.scatter(*xy, color=cmap(k / max(1, len(coefs) - 1)), s=40, zorder=3)
            text = f"s={r['struct_coef']:g}" + (
                f",c={r['contrastive_coef']:g}" if r["contrastive_coef"] else ""
            )
        else:
            ax.scatter(*xy, marker="D", facecolors="none", edgecolors="tab:red", s=40, zorder=3)
            text = f"≤{r['budget']:,}"
        ax.annotate(text, xy, fontsize=7, xytext=(3, 3), textcoords="offset points")
    for r in data["reference"]:
        ax.scatter(r["params"], r[metric], marker="*", color="tab:gray", s=90, zorder=3)
        ax.annotate(
            r["model"],
            (r["params"], r[metric]),
            fontsize=7,
            color="tab:gray",
            xytext=(3, -9),
            textcoords="offset points",
        )
    by_folder = {r["folder"]: r for r in data["rows"]}
    styles = {
        "coefficients": ("-", "tab:blue", "Pareto front, coefficient sweep"),
        "budgets": ("--", "tab:red", "Pareto front, budgets of one search"),
    }
    for name, folders in data["pareto"].items():
        if folders:
            style, color, label = styles[name]
            xs = [by_folder[f]["params"] for f in folders]
            ys = [by_folder[f][metric] for f in folders]
            ax.step(xs, ys, where="post", linestyle=style, color=color, label=label, zorder=2)
            ax.scatter(xs, ys, s=130, facecolors="none", edgecolors=color, zorder=2)
    ax.scatter([], [], color=cmap(0.5), s=40, label="coefficient run (s: struct, c: contrastive)")
    ax.scatter(
        [],
        [],
        marker="D",
        facecolors="none",
        edgecolors="tab:red",
        s=40,
        label="budget run (≤ N parameters)",
    )
    ax.scatter([], [], marker="*", color="tab:gray", s=90, label="reference rows")
    ax.set_xlabel("parameters of the retrained model")
    ax.set_ylabel(
        ylabel + (", higher is better" if METRICS[data["task"]][1] else ", lower is better")
    )
    ax.set_title(f"{data['task']}: quality against size ({', '.join(data['domains'])})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
