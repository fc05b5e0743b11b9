#!/usr/bin/env python
"""Quality against size as the regularizer moves: a sweep of search -> derive -> retrain -> test.

For every coefficient pair (--struct-coefs x --contrastive-coefs) and seed (--seeds) it runs the
task's pipeline (vision: scripts/rotated_mnist_table.py's protocol on D rotations of MNIST; lm:
scripts/lm_pipeline.py's on the languages of --data); once per seed the reference rows (the union
model, one shared architecture; the single-domain models: lm single_<lang>, vision D = 1 on rot0,
the seed's "single"; --no-baselines skips them); and with --budgets the budgeted genotypes of ONE
search (--budget-from; default: the first seed's search at the smallest nonzero struct coef, the
first contrastive coef), derived by mdnas_fairseq's derive_with_budget and retrained with the same
protocol. Writes OUT/sweep.json, OUT/sweep.md and OUT/pareto.png (scripts/sweep_report.py).

Every run has its folder (OUT/points/struct<S>_contr<C>_seed<K>, OUT/reference/<model>_seed<K>,
OUT/budgets/<search>/budget<N>) with its genotype.json, logs, checkpoints and, once finished, its
result.json (written atomically). A rerun skips the finished runs (an unfinished folder is redone
from scratch), recomputes the summary, and refuses a finished run made with other settings. A
failed run is reported and the others go on; the exit status is then 1. An impossible budget is
skipped with the smallest possible size.

The pipeline's own settings (epochs, sizes, learning rates; listed below with their defaults) are
passed through to its parser; for lm also fairseq-train flags after --, as lm_pipeline.py takes
them.
"""

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)  # the pipelines are scripts of this folder

import lm_pipeline  # noqa: E402
import rotated_mnist_table as vision_table  # noqa: E402
import sweep_report as report  # noqa: E402
from sweep_tasks import LMRuns, RunFailed, VisionRuns  # noqa: E402

from mdnas_fairseq.provenance import display_path, git_commit  # noqa: E402
from mdnas_fairseq.search import atomic_write_text  # noqa: E402

# The pipelines' settings the sweep sets per run or does not use: an error when given.
NOT_FOR_SWEEP = {
    "vision": (
        "models",
        "struct_coef",
        "contrastive_coef",
        "param_coef",
        "random_count",
        "random_reference",
        "search_seeds",
        "select_by_retrain_epochs",
        "work_dir",
        "keep_work",
    ),
    "lm": (
        "models",
        "struct_coef",
        "contrastive_coef",
        "param_coef",
        "seed",
        "search_seeds",
        "select_by_retrain_epochs",
        "random_count",
        "random_reference",
        "baseline_arch",
        "baseline_flags",
    ),
}
SET_BY_SWEEP = ("out", "domains", "seeds", "mnist_root", "data", "help", "extra")
UNSET = object()


def pipeline_flags():
    """The pipelines' own settings, with their defaults, for --help."""
    lines = []
    for task, module in (("vision", vision_table), ("lm", lm_pipeline)):
        flags = [
            f"{a.option_strings[0]} ({a.default})"
            for a in module.build_parser()._actions
            if a.option_strings and a.dest not in NOT_FOR_SWEEP[task] + SET_BY_SWEEP
        ]
        lines.append(f"{task} settings ({module.__name__}.py): " + ", ".join(flags))
    return "\n\n".join(lines) + "\n\nlm: fairseq-train flags after --, e.g. -- --embed-dim 48"


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n\n", 1)[1] + "\n" + pipeline_flags(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, choices=("vision", "lm"))
    p.add_argument("--out", required=True, help="output folder (resumed if it has finished runs)")
    p.add_argument("--struct-coefs", default="0,0.1,1,10", help="beta_struct values")
    p.add_argument("--contrastive-coefs", default="0", help="beta_trip values (x struct coefs)")
    p.add_argument("--seeds", default="0,1,2", help="seeds of searches and retrainings")
    p.add_argument(
        "--domains",
        type=int,
        default=None,
        help="vision: rotations D (0, 90, .. degrees; 2); lm: the number of --langs",
    )
    p.add_argument("--mnist-root", default="", help="vision: MNIST in torchvision's layout")
    p.add_argument("--data", default="", help="lm: data-bin made by scripts/prepare_parallel.py")
    p.add_argument("--langs", default="", help="lm: languages (domains); default: the data's")
    p.add_argument("--budgets", default="", help="parameter budgets N1,N2,.. from one search")
    p.add_argument(
        "--budget-from",
        default="",
        metavar="struct_coef=X,contrastive_coef=Y,seed=S",
        help="the search of the budgets, a point of the sweep (keys may be left out)",
    )
    p.add_argument("--no-baselines", action="store_true", help="skip the reference rows")
    return p


def number_list(text, name, kind):
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise SystemExit(f"{name} must be distinct numbers >= 0, got {text!r}")
    return values


def pipeline_settings(task, given, rest, extra):
    """The pipeline's namespace of its own flags ``rest`` (+ fairseq ``extra``) and ``given``."""
    module = vision_table if task == "vision" else lm_pipeline
    parser = module.build_parser()
    parser.prog = f"sweep.py --task {task} (settings of {module.__name__}.py)"
    defaults = {d: parser.get_default(d) for d in NOT_FOR_SWEEP[task]}
    parser.set_defaults(**{d: UNSET for d in defaults})
    ns = parser.parse_args(given + rest + (["--"] + extra if extra else []))
    used = ["--" + d.replace("_", "-") for d in defaults if getattr(ns, d) is not UNSET]
    if used:
        raise SystemExit(
            f"sweep.py: {', '.join(used)}: settings of {module.__name__}.py that the "
            "sweep sets per run or does not use"
        )
    for d, v in defaults.items():
        setattr(ns, d, v)
    return ns


def parse(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    extra = argv[cut + 1 :]
    args, rest = build_parser().parse_known_args(argv[:cut])
    args.argv = argv
    args.struct_list = number_list(args.struct_coefs, "--struct-coefs", float)
    args.contr_list = number_list(args.contrastive_coefs, "--contrastive-coefs", float)
    args.seed_list = number_list(args.seeds, "--seeds", int)
    args.budget_list = number_list(args.budgets, "--budgets", int) if args.budgets.strip() else []
    if args.task == "vision":
        if args.data or args.langs or extra:
            raise SystemExit("--task vision takes no --data, --langs, or fairseq flags after --")
        args.D = 2 if args.domains is None else args.domains
        if not 1 <= args.D <= 4:
            raise SystemExit(f"--domains {args.D}: vision runs D = 1 to 4 rotations")
        if args.mnist_root and not os.path.isdir(args.mnist_root):
            raise SystemExit(f"--mnist-root {args.mnist_root}: no such directory")
        given = [
            "--out",
            args.out,
            "--domains",
            str(args.D),
            "--seeds",
            args.seeds,
            "--mnist-root",
            args.mnist_root,
        ]
        args.pipeline = pipeline_settings("vision", given, rest, [])
        args.runs = VisionRuns(args.pipeline, args.D)
    else:
        if not args.data or args.mnist_root:
            raise SystemExit(
                "--task lm needs --data DIR/data-bin (scripts/prepare_parallel.py) "
                "and takes no --mnist-root"
            )
        available = lm_pipeline.data_langs(args.data)
        langs = [x.strip() for x in args.langs.split(",") if x.strip()] or available
        if any(x not in available for x in langs) or len(set(langs)) != len(langs):
            raise SystemExit(f"--langs {args.langs}: distinct languages of the data, {available}")
        if args.domains is not None and args.domains != len(langs):
            raise SystemExit(f"--domains {args.domains}, but {len(langs)} languages: {langs}")
        given = ["--data", args.data, "--out", args.out]
        args.pipeline = pipeline_settings("lm", given, rest, extra)
        stray = args.pipeline.extra[: len(args.pipeline.extra) - len(extra)]
        if stray:
            raise SystemExit(f"sweep.py: unexpected arguments {stray} (fairseq flags go after --)")
        args.runs = LMRuns(args.pipeline, langs)
    args.budget_source = budget_source(args) if args.budget_list else None
    return args


def budget_source(args):
    """(struct coef, contrastive coef, seed) of the search whose budgeted genotypes retrain."""
    nonzero = [s for s in args.struct_list if s > 0]
    chosen = {
        "struct_coef": min(nonzero) if nonzero else args.struct_list[0],
        "contrastive_coef": args.contr_list[0],
        "seed": args.seed_list[0],
    }
    for item in filter(None, (x.strip() for x in args.budget_from.split(","))):
        key, _, value = item.partition("=")
        try:
            chosen[key] = int(value) if key == "seed" else float(value)
        except ValueError:
            key = None
        if key not in ("struct_coef", "contrastive_coef", "seed"):
            raise SystemExit(
                f"--budget-from {args.budget_from!r}: use struct_coef=X,contrastive_coef=Y,seed=S"
            )
    s, c, k = chosen["struct_coef"], chosen["contrastive_coef"], chosen["seed"]
    if s not in args.struct_list or c not in args.contr_list or k not in args.seed_list:
        raise SystemExit(
            f"--budget-from: struct {s:g}, contr {c:g}, seed {k} is not a point of "
            f"the sweep ({args.struct_coefs} x {args.contrastive_coefs} x "
            f"{args.seeds})"
        )
    return s, c, k


def point_folder(struct, contr, seed):
    return os.path.join("points", f"struct{struct!r}_contr{contr!r}_seed{seed}")


def run_job(out, folder, protocol, fn, ignore=()):
    """(row, ran): a finished run's row (its result.json), or ``fn(path)`` run now in a fresh
    folder. A finished run made with other settings stops the sweep; settings named in ``ignore``
    (what is not protocol today, though an older run may have recorded it) are not compared."""
    path = os.path.join(out, folder)
    done = os.path.join(path, "result.json")
    protocol = json.loads(json.dumps(protocol))
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            row = json.load(f)
        old = row.get("protocol") or {}
        old = {k: v for k, v in old.items() if k in protocol or k not in ignore}
        if old != protocol:
            diff = sorted(k for k in set(old) | set(protocol) if old.get(k) != protocol.get(k))
            raise SystemExit(
                f"{display_path(done)}: finished with other settings "
                f"({', '.join(diff)}); use another --out, or remove that folder to "
                "rerun it"
            )
        return row, False
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    row = dict(fn(path), protocol=protocol, folder=folder)
    atomic_write_text(done, json.dumps(row, indent=1) + "\n")
    return row, True


class Sweep:
    """The runs of one invocation; the summary is rewritten after every run."""

    def __init__(self, args):
        self.args, self.runs, self.out = args, args.runs, args.out
        self.rows, self.reference, self.skipped, self.failed = [], [], [], []
        settings = {k: v for k, v in vars(args.pipeline).items() if k not in self.runs.NOT_PROTOCOL}
        self.protocol = dict(
            settings, task=args.task, domains=self.runs.domains, data=self.runs.data_id
        )
        self.commit = git_commit(ROOT)

    def job(self, what, folder, fn, **fields):
        start = time.time()
        try:
            row, ran = run_job(
                self.out,
                folder,
                dict(self.protocol, **fields),
                lambda path: dict(fields, commit=self.commit, **fn(path)),
                ignore=self.runs.NOT_PROTOCOL,
            )
        except RunFailed as e:
            print(f"FAILED {what}: {e}", flush=True)
            self.failed.append({"what": what, "folder": folder, "error": str(e).splitlines()[0]})
            return None
        metric = report.METRICS[self.args.task][0]
        per = ", ".join(f"{d} {v:.2f}" for d, v in row[f"{metric}_per_domain"].items())
        took = f"[{time.time() - start:.0f}s]" if ran else "(finished before)"
        print(
            f"{what}: {metric} {row[metric]:.2f} ({per}), params {row['params']:,} {took}",
            flush=True,
        )
        (self.reference if row["kind"] == "reference" else self.rows).append(row)
        self.write(figure=False)  # the figure once at the end
        return row

    def run(self):
        a = self.args
        for struct in a.struct_list:
            for contr in a.contr_list:
                for seed in a.seed_list:
                    self.job(
                        f"struct {struct:g} contr {contr:g} seed {seed}",
                        point_folder(struct, contr, seed),
                        self.runs.searched(struct, contr, seed, "multi"),
                        kind="coef",
                        model="multimodel",
                        struct_coef=struct,
                        contrastive_coef=contr,
                        seed=seed,
                        budget=None,
                    )
        if a.budget_list:
            self.run_budgets(*a.budget_source)
        for seed in [] if a.no_baselines else a.seed_list:
            for model in self.runs.reference_models():
                self.job(
                    f"{model} seed {seed}",
                    os.path.join("reference", f"{model}_seed{seed}"),
                    self.runs.searched(0.0, 0.0, seed, model),
                    kind="reference",
                    model=model,
                    struct_coef=0.0,
                    contrastive_coef=0.0,
                    seed=seed,
                    budget=None,
                )
        return self.write()

    def run_budgets(self, struct, contr, seed):
        from mdnas_fairseq.derive import derive_budget, write_derived
        from mdnas_fairseq.search import DerivationError

        source = point_folder(struct, contr, seed)
        for budget in sorted(self.args.budget_list, reverse=True):
            what = f"budget {budget:,} (search struct {struct:g} contr {contr:g} seed {seed})"
            if not os.path.isfile(os.path.join(self.out, source, "result.json")):
                self.skipped.append({"budget": budget, "reason": f"{source} did not finish"})
                continue
            try:
                derived = derive_budget(os.path.join(self.out, source, "genotype.json"), budget)
            except DerivationError as e:
                print(f"SKIPPED {what}: {e}", flush=True)
                self.skipped.append({"budget": budget, "reason": str(e)})
                continue

            def retrain(path, derived=derived):
                write_derived(os.path.join(path, "genotype.json"), *derived)
                return self.runs.retrained(struct, contr, seed)(path)

            record = derived[2]
            self.job(
                what,
                os.path.join("budgets", os.path.basename(source), f"budget{budget}"),
                retrain,
                kind="budget",
                model="multimodel",
                struct_coef=struct,
                contrastive_coef=contr,
                seed=seed,
                budget=budget,
                moves=len(record["steps"]),
                searched_params=record["searched_params"],
                smallest_possible_params=record["smallest_possible_params"],
            )

    def write(self, figure=True):
        a = self.args
        shown = [display_path(x) if os.path.exists(x) else x for x in a.argv]
        source = a.budget_source
        protocol = self.runs.protocol_text(self.rows + self.reference)
        header = {
            "task": a.task,
            "domains": self.runs.domains,
            "command": "python scripts/sweep.py " + shlex.join(shown),
            "commit": self.commit,
            "out": display_path(self.out),
            "protocol": protocol,
            "reference_text": self.runs.REFERENCE_TEXT,
            "settings": {
                k: display_path(v) if k in ("data", "mnist_root", "out") else v
                for k, v in vars(a.pipeline).items()
            },
            "sweep": {
                "struct_coefs": a.struct_list,
                "contrastive_coefs": a.contr_list,
                "seeds": a.seed_list,
                "budgets": a.budget_list,
                "baselines": not a.no_baselines,
            },
            "budget_from": (
                dict(zip(("struct_coef", "contrastive_coef", "seed"), source)) if source else None
            ),
        }
        return report.write_outputs(
            self.out, header, self.rows, self.reference, self.skipped, self.failed, figure
        )


def main(argv=None):
    args = parse(argv)
    logging.getLogger().setLevel(logging.WARNING)  # fairseq's import sets DEBUG: matplotlib's noise
    os.makedirs(args.out, exist_ok=True)
    sweep = Sweep(args)
    sweep.run()
    print(f"\nwrote {display_path(os.path.join(args.out, 'sweep.md'))}, sweep.json, pareto.png")
    if sweep.failed:
        print(
            f"{len(sweep.failed)} run(s) failed: " + "; ".join(f["what"] for f in sweep.failed),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
