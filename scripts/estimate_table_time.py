#!/usr/bin/env python
"""Estimate how long one scripts/lm_pipeline.py table takes, from a short measurement (issue 26).

It runs each kind of command the table runs for a few hundred updates at most, with the table's
own protocol (``--protocol``, ``--arch`` and every lm_pipeline.py flag apply, and the commands are
lm_pipeline's: :func:`lm_pipeline.train_flags`, :func:`lm_pipeline.retrain_command`, ...):

* a multi_struct search (and a multi_contr search where the table has that row), a retrain of the
  genotype it wrote and the baseline, each twice: ``--max-update A`` and ``--max-update B``
  (``--updates A,B``, default 20,120). The CPU seconds (user + system, of the child process) per
  update are the difference over ``B - A`` updates; what is left of the first run (process start,
  one validation, the checkpoint) is counted once per EPOCH, which overestimates a little;
* the perturbation selection from the B search's checkpoint (whole: its cost does not grow with the
  training), and fairseq-eval-lm on every domain's test split.

The table's time is then the sum over its rows of epochs x updates per epoch (the data's train
sentences / --batch-size, per domain: a batch holds one domain) x CPU seconds per update, plus the
fixed parts. Every command runs on one thread (OMP_NUM_THREADS=1), so CPU seconds are the wall
seconds of a run that has a core to itself: two tables side by side on two cores. A loaded machine
inflates the CPU time a little (shared caches), so the estimate leans long.

Writes ``--out/estimate.json`` and ``--out/estimate.md`` (the measurements, the rows' estimates and
the command) and prints the markdown. Example::

    python scripts/estimate_table_time.py --data build/real/L/data/data-bin --out build/estimate-L \\
        --protocol real
"""

import json
import math
import os
import resource
import shlex
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]  # a checkout; scripts/lm_pipeline.py builds every command

import lm_pipeline as lm  # noqa: E402

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


def two_points(args, work, name, make_cmd):
    """CPU seconds per update and the fixed part of a training, from --max-update A and B."""
    runs = []
    for n in args.update_points:
        save = os.path.join(work, f"{name}_{n}")
        cpu, wall = cpu_run(
            args,
            make_cmd(save) + ["--max-update", str(n)],
            save + ".log",
            lambda save=save: shutil.rmtree(save, ignore_errors=True),  # no resuming
        )
        runs.append({"updates": n, "cpu_seconds": cpu, "wall_seconds": wall})
        print(f"   {name}: {n} updates, {cpu:.1f} CPU s ({wall:.1f} s wall)", flush=True)
    (a, ca), (b, cb) = [(r["updates"], r["cpu_seconds"]) for r in runs]
    per_update = (cb - ca) / (b - a)
    return {"per_update": per_update, "fixed": max(ca - a * per_update, 0.0), "runs": runs}


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


def train_sentences(meta, domain):
    by = meta.get("splits_by_lang")
    return (by[domain] if by else meta["splits"])["train"]


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
        print("== perturbation selection (whole)", flush=True)
        out = os.path.join(work, "perturbation.json")
        cmd = [lm.fairseq_cmd("mdnas-derive"), search_dir, "--select", "perturbation"]
        cmd += ["--out", out] + args.perturb_flags.split() + (["--cpu"] if args.cpu else [])
        cpu, wall = cpu_run(args, cmd, os.path.join(work, "perturbation.log"))
        m["perturbation"] = {"cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2)}
        print(f"   {cpu:.1f} CPU s ({wall:.1f} s wall)", flush=True)
    return m


def estimate(args, meta, models, m):
    """Estimated CPU seconds of every row of the table, from the measurements ``m``."""
    domains = meta["langs"]
    batches = {d: math.ceil(train_sentences(meta, d) / args.batch_size) for d in domains}

    def training(cost, epochs, doms):
        updates = sum(batches[d] for d in doms)
        return epochs * (updates * cost["per_update"] + cost["fixed"])

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
    return rows, batches


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
        "| measured | CPU s / update | fixed CPU s (per epoch) |",
        "|---|---|---|",
    ]
    for kind in ("search", "search_contr", "retrain", "baseline"):
        if kind in m:
            lines.append(f"| {kind} | {m[kind]['per_update']:.3f} | {m[kind]['fixed']:.1f} |")
    if "perturbation" in m:
        lines.append(f"| perturbation selection (whole) | - | {m['perturbation']['cpu_seconds']} |")
    lines.append(
        "| fairseq-eval-lm (per domain) | - | "
        + ", ".join(f"{d} {s}" for d, s in m["eval"].items())
        + " |"
    )
    lines += [
        "",
        "Updates per epoch (train batches): "
        + ", ".join(f"{d} {n}" for d, n in result["batches_per_epoch"].items())
        + ".",
        "",
        "| row | search (or selection) CPU s | retrain + test CPU s | minutes |",
        "|---|---|---|---|",
    ]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['search']:.0f} | {r['retrain']:.0f} | {r['minutes']} |")
    lines += ["", f"Total: {result['total_minutes']} minutes."]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.out = os.path.abspath(args.out)
    meta = lm.data_metadata(args.data)
    models, skipped = lm.table_models(args.models, meta["langs"], meta.get("parallel", True))
    start = time.time()
    measured = measure(args, meta["langs"], models, os.path.join(args.out, "runs"))
    rows, batches = estimate(args, meta, models, measured)
    result = {
        "command": "python scripts/estimate_table_time.py " + shlex.join(argv),
        "commit": git_commit(ROOT),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": display_path(args.data),
        "protocol": args.protocol_record,
        "models": models,
        "skipped": skipped,
        "measured": measured,
        "batches_per_epoch": batches,
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
