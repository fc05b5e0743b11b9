#!/usr/bin/env python
"""Estimate how long one scripts/lm_pipeline.py table takes, from a short measurement (issue 26).

It runs each kind of command the table runs for a few hundred updates at most, with the table's
own protocol (``--protocol``, ``--arch`` and every lm_pipeline.py flag apply, and the commands are
lm_pipeline's: :func:`lm_pipeline.train_flags`, :func:`lm_pipeline.retrain_command`, ...):

* a multi_struct search (and a multi_contr search where the table has that row), a retrain of the
  genotype it wrote and the baseline, each twice: ``--max-update A`` and ``--max-update B``
  (``--updates A,B``, default 20,120). The CPU seconds (user + system, of the child process) per
  trained token are the difference between the two runs over the difference of their tokens
  (fairseq's wpb x num_updates: per token, since gettext's sentences differ so much in length that
  a hundred batches' tokens per batch miss the epoch's mean by 10-20%); what is left of the first
  run (process start, one validation, the checkpoint) is counted once per EPOCH, which
  overestimates a little;
* the perturbation selection from the B search's checkpoint, without and with one fine-tune step,
  extrapolated to the protocol's steps (:func:`perturbation_cost`; its cost does not grow with the
  training), and fairseq-eval-lm on every domain's test split.

The table's time is then the sum over its rows of epochs x the train tokens of the row's domains
(the data's pieces plus one end of sentence per sentence) x CPU seconds per token, plus the
fixed parts. Every command runs on one thread (OMP_NUM_THREADS=1), so CPU seconds are the wall
seconds of a run that has a core to itself: two tables side by side on two cores. A loaded machine
inflates the CPU time a little (shared caches), so the estimate leans long.

Writes ``--out/estimate.json`` and ``--out/estimate.md`` (the measurements, the rows' estimates and
the command) and prints the markdown. Example::

    python scripts/estimate_table_time.py --data build/real/L/data/data-bin --out build/estimate-L \\
        --protocol real
"""

import json
import os
import re
import resource
import shlex
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]  # a checkout; scripts/lm_pipeline.py builds every command

import lm_pipeline as lm  # noqa: E402

TRAIN_SUMMARY = re.compile(r"\| train \| epoch \d+ \|.*?\| wpb ([0-9.]+) \|.*?\| num_updates (\d+)")

from mdnas_fairseq.provenance import display_path, git_commit  # noqa: E402


def build_parser():
    p = lm.build_parser()
    p.description = __doc__.split("\n")[0]
    p.epilog = "writes: --out/estimate.json and --out/estimate.md; the runs under --out/runs"
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the measurements of an earlier run in --out whose command was the same",
    )
    p.add_argument(
        "--costs-from",
        default=None,
        metavar="ESTIMATE_JSON",
        help="measure nothing: apply the costs another estimate measured with the same settings "
        "but the rows and epochs (e.g. table L's, to table G's data); evaluation costs are their "
        "mean per domain and the perturbation selection's are scaled to the domain count "
        "(see costs_for)",
    )
    p.add_argument(
        "--updates",
        default="20,120",
        help="A,B: the two --max-update values of each measured training (default: %(default)s)",
    )
    return p


def parse_args(argv=None):
    args = lm.parse_args(argv, build_parser())
    a, b = (int(x) for x in args.updates.split(","))
    if not 0 < a < b:
        raise SystemExit(f"--updates A,B needs 0 < A < B, got {args.updates}")
    args.update_points = (a, b)
    return args


def cpu_run(args, cmd, log_path, before_run=None):
    """(CPU seconds of the child: user + system, wall seconds) of one command; with --resume, those
    of its finished earlier run (recorded beside its log) if the command is the same."""
    cost_path = log_path[: -len(".log")] + ".cost.json"
    if args.resume and os.path.isfile(cost_path):
        with open(cost_path, encoding="utf-8") as f:
            cost = json.load(f)
        if cost["command"] == cmd:
            return cost["cpu_seconds"], cost["wall_seconds"]
    if before_run is not None:
        before_run()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    _, wall = lm.run(cmd, log_path)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cost = {"command": cmd, "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2)}
    with open(cost_path, "w", encoding="utf-8") as f:
        json.dump(cost, f)
    return cost["cpu_seconds"], cost["wall_seconds"]


def trained_tokens(log_path):
    """Target tokens a fairseq-train run trained on: its last train summary's wpb x num_updates."""
    with open(log_path, encoding="utf-8") as f:
        found = TRAIN_SUMMARY.findall(f.read())
    if not found:
        raise SystemExit(f"{log_path}: no train summary (wpb, num_updates)")
    wpb, updates = found[-1]
    return float(wpb) * int(updates)


def two_points(args, work, name, make_cmd):
    """CPU seconds per trained token and the fixed part of a training, from --max-update A and B
    (per token, not per update: gettext's sentences differ much in length, so a few hundred
    batches' tokens per batch are far from the epoch's mean)."""
    runs = []
    for n in args.update_points:
        save = os.path.join(work, f"{name}_{n}")
        cpu, wall = cpu_run(
            args,
            make_cmd(save) + ["--max-update", str(n)],
            save + ".log",
            lambda save=save: shutil.rmtree(save, ignore_errors=True),  # no resuming
        )
        tokens = trained_tokens(save + ".log")
        runs.append({"updates": n, "tokens": tokens, "cpu_seconds": cpu, "wall_seconds": wall})
        print(
            f"   {name}: {n} updates, {tokens:.0f} tokens, {cpu:.1f} CPU s ({wall:.1f} s wall)",
            flush=True,
        )
    (ta, ca), (tb, cb) = [(r["tokens"], r["cpu_seconds"]) for r in runs]
    per_token = (cb - ca) / (tb - ta)
    return {"per_token": per_token, "fixed": max(ca - ta * per_token, 0.0), "runs": runs}


def eval_command(args, checkpoint, domain):
    """lm_pipeline.evaluate's fairseq-eval-lm command (as it runs it) of one domain's test split."""
    captured = []

    def capture(cmd, log_path):
        captured.append(cmd)
        return "Loss (base 2): 1.0, Perplexity: 2.0", 0.0

    real, lm.run = lm.run, capture
    try:
        lm.evaluate(args, checkpoint, domain, "unused.log")
    finally:
        lm.run = real
    return captured[0]


def train_tokens(meta, domain):
    """Target tokens of a domain's train split: its pieces and one end of sentence per sentence
    (the sum of the fairseq dataset's sizes)."""
    by = meta.get("splits_by_lang")
    sentences = (by[domain] if by else meta["splits"])["train"]
    return meta["tokens"]["train"][domain] + sentences


def measure(args, domains, models, work):
    """The measured costs (CPU seconds) of the table's kinds of command."""
    os.makedirs(work, exist_ok=True)
    train = lm.fairseq_cmd("fairseq-train")
    m = {}

    def search_cmd(name):
        _, extra = lm.model_settings(name, domains, args)
        return lambda save: (
            [train] + lm.train_flags(args, domains, save, 1) + lm.search_flags(args) + extra
        )

    print("== search (multi_struct)", flush=True)
    m["search"] = two_points(args, work, "search", search_cmd("multi_struct"))
    if "multi_contr" in models:
        print("== search (multi_contr)", flush=True)
        m["search_contr"] = two_points(args, work, "search_contr", search_cmd("multi_contr"))
    b = args.update_points[1]
    search_dir = os.path.join(work, f"search_{b}")
    genotype = os.path.join(search_dir, "genotype.json")
    print("== retrain (the B search's genotype)", flush=True)
    m["retrain"] = two_points(
        args,
        work,
        "retrain",
        lambda save: lm.retrain_command(args, domains, genotype, save, []),
    )
    checkpoint = os.path.join(work, f"retrain_{b}", "checkpoint_best.pt")
    print("== fairseq-eval-lm, every domain", flush=True)
    m["eval"] = {}
    for d in domains:
        log = os.path.join(work, f"eval_{d}.log")
        m["eval"][d], _ = cpu_run(args, eval_command(args, checkpoint, d), log)
    if "baseline" in models:
        print(f"== baseline ({args.baseline_arch})", flush=True)
        m["baseline"] = two_points(
            args,
            work,
            "baseline",
            lambda save: (
                [train]
                + lm.train_flags(args, domains, save, 1, arch=args.baseline_arch)
                + args.baseline_flags.split()
            ),
        )
    if "perturbation" in models:
        print("== perturbation selection (without and with one fine-tune step)", flush=True)
        m["perturbation"] = perturbation_cost(args, search_dir, work)
    return m


def perturbation_cost(args, search_dir, work):
    """CPU seconds of the protocol's perturbation selection, from two shorter ones: every decision
    computes each candidate's loss on the same B held-out batches per domain, and every fine-tune
    takes N steps on fresh training batches, so the cost is ``cost(B, 0) + N * per_step``; measured
    at the protocol's B with N = 0 and N = 1, it is extrapolated to its --perturb-finetune-steps."""
    from mdnas_fairseq import derive

    flags = derive.build_parser().parse_args(
        ["x", "--select", "perturbation", "--out", "y"] + args.perturb_flags.split()
    )
    batches = derive._default(flags.perturb_batches, derive.PERTURB_BATCHES)
    steps = derive._default(flags.perturb_finetune_steps, derive.PERTURB_FINETUNE_STEPS)
    runs = {}
    for n in (0, 1):
        out = os.path.join(work, f"perturbation_n{n}.json")
        cmd = [lm.fairseq_cmd("mdnas-derive"), search_dir, "--select", "perturbation"]
        cmd += ["--out", out] + strip_counts(args.perturb_flags.split())
        cmd += ["--perturb-batches", str(batches), "--perturb-finetune-steps", str(n)]
        cmd += ["--cpu"] if args.cpu else []
        runs[n], _ = cpu_run(args, cmd, out[: -len(".json")] + ".log")
        print(f"   {batches} batches, {n} fine-tune step(s): {runs[n]:.1f} CPU s", flush=True)
    per_step = runs[1] - runs[0]
    return {
        "batches": batches,
        "finetune_steps": steps,
        "fixed": round(runs[0], 2),
        "per_step": round(per_step, 2),
        "runs": {f"n{n}": v for n, v in runs.items()},
        "cpu_seconds": round(runs[0] + steps * per_step, 1),
    }


def strip_counts(flags):
    """``flags`` without --perturb-batches and --perturb-finetune-steps and their values."""
    out, skip = [], False
    for x in flags:
        if skip:
            skip = False
        elif x in ("--perturb-batches", "--perturb-finetune-steps"):
            skip = True
        else:
            out.append(x)
    return out


# settings that change how much is run, not what a token or a selection costs
NOT_COSTS = ("models", "search_epochs", "retrain_epochs", "random_count", "random_reference")


def costs_for(path, args, domains):
    """The costs measured by the estimate ``path`` (the same settings but :data:`NOT_COSTS`), for
    ``domains``:
    fairseq-eval-lm at the mean of the measured domains' costs; the perturbation selection's loss
    part scaled by D'/D (each domain's decisions compute their own losses), its fine-tune part by
    (D'/D)^2 (as many fine-tunes as decisions, each step one batch of every domain)."""
    with open(path, encoding="utf-8") as f:
        source = json.load(f)
    ours = {k: v for k, v in args.protocol_record["settings"].items() if k not in NOT_COSTS}
    theirs = {k: v for k, v in source["protocol"]["settings"].items() if k not in NOT_COSTS}
    if ours != theirs:
        changed = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise SystemExit(f"--costs-from {path}: measured with other settings: {', '.join(changed)}")
    m = dict(source["measured"])
    mean_eval = sum(m["eval"].values()) / len(m["eval"])
    ratio = len(domains) / len(m["eval"])
    m["eval"] = {d: round(mean_eval, 2) for d in domains}
    if "perturbation" in m:
        p = dict(m["perturbation"])
        p["fixed"] = round(p["fixed"] * ratio, 2)
        p["per_step"] = round(p["per_step"] * ratio**2, 2)
        p["cpu_seconds"] = round(p["fixed"] + p["finetune_steps"] * p["per_step"], 1)
        p["scaled_from_domains"] = len(source["measured"]["eval"])
        m["perturbation"] = p
    m["from"] = display_path(path)
    return m


def estimate(args, meta, models, m):
    """Estimated CPU seconds of every row of the table, from the measurements ``m``."""
    domains = meta["langs"]
    tokens = {d: train_tokens(meta, d) for d in domains}

    def training(cost, epochs, doms):
        return epochs * (sum(tokens[d] for d in doms) * cost["per_token"] + cost["fixed"])

    def tested(doms):
        return sum(m["eval"][d] for d in doms)

    def retrain(doms):
        return training(m["retrain"], args.retrain_epochs, doms) + tested(doms)

    rows = {}
    for name in models:
        doms = [name[len("single_") :]] if name.startswith("single_") else domains
        if name in ("random", "perturbation", "baseline"):
            continue
        search = m["search_contr"] if name == "multi_contr" else m["search"]
        rows[name] = {
            "search": training(search, args.search_epochs, doms),
            "retrain": retrain(doms),
        }
    if "random" in models:
        rows["random"] = {"search": 0.0, "retrain": args.random_count * retrain(domains)}
    if "perturbation" in models:
        rows["perturbation"] = {
            "search": m["perturbation"]["cpu_seconds"],
            "retrain": retrain(domains),
        }
    if "baseline" in models:
        rows["baseline"] = {
            "search": 0.0,
            "retrain": training(m["baseline"], args.retrain_epochs, domains) + tested(domains),
        }
    for r in rows.values():
        r["minutes"] = round((r["search"] + r["retrain"]) / 60, 1)
        r["search"], r["retrain"] = round(r["search"], 1), round(r["retrain"], 1)
    return rows, tokens


def format_estimate(result):
    m = result["measured"]
    lines = [
        f"Estimated time of one table (CPU minutes = wall minutes of a run with a core to itself), "
        f"commit {result['commit']}, {result['date']}",
        "",
        f"Command: `{result['command']}`",
        "",
        lm.format_protocol(result["protocol"]),
        "",
        "| measured | CPU ms / token | fixed CPU s (per epoch) |",
        "|---|---|---|",
    ]
    for kind in ("search", "search_contr", "retrain", "baseline"):
        if kind in m:
            lines.append(f"| {kind} | {1000 * m[kind]['per_token']:.4f} | {m[kind]['fixed']:.1f} |")
    if "perturbation" in m:
        p = m["perturbation"]
        lines.append(
            f"| perturbation selection ({p['batches']} batches, {p['finetune_steps']} fine-tune "
            f"steps) | {p['per_step']:.1f} per fine-tune step | without fine-tune {p['fixed']:.1f} "
            f"(total {p['cpu_seconds']:.0f}) |"
        )
    lines.append(
        "| fairseq-eval-lm (per domain) | - | "
        + ", ".join(f"{d} {s}" for d, s in m["eval"].items())
        + " |"
    )
    lines += [
        "",
        "Train tokens per epoch: "
        + ", ".join(f"{d} {n:,}" for d, n in result["train_tokens"].items())
        + ".",
        "",
        "| row | search (or selection) CPU s | retrain + test CPU s | minutes |",
        "|---|---|---|---|",
    ]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['search']:.0f} | {r['retrain']:.0f} | {r['minutes']} |")
    if "from" in m:
        lines += ["", f"Costs measured by {m['from']} (not on this data)."]
    lines += ["", f"Total: {result['total_minutes']} minutes."]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    meta = lm.data_metadata(args.data)
    models, skipped = lm.table_models(args.models, meta["langs"], meta.get("parallel", True))
    start = time.time()
    if args.costs_from:
        measured = costs_for(args.costs_from, args, meta["langs"])
        missing = [k for k in ("search_contr", "baseline", "perturbation") if k not in measured]
        needed = {"search_contr": "multi_contr", "baseline": "baseline"}
        for k in missing:
            if needed.get(k, k) in models:
                raise SystemExit(f"--costs-from {args.costs_from}: no {k} measured")
    else:
        measured = measure(args, meta["langs"], models, os.path.join(args.out, "runs"))
    rows, tokens = estimate(args, meta, models, measured)
    result = {
        "command": "python scripts/estimate_table_time.py " + shlex.join(argv),
        "commit": git_commit(ROOT),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": display_path(args.data),
        "protocol": args.protocol_record,
        "models": models,
        "skipped": skipped,
        "measured": measured,
        "train_tokens": tokens,
        "rows": rows,
        "total_minutes": round(sum(r["minutes"] for r in rows.values()), 1),
        "measurement_wall_seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(args.out, "estimate.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    text = format_estimate(result)
    with open(os.path.join(args.out, "estimate.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
