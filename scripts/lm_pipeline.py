#!/usr/bin/env python
"""Search, derive, retrain and evaluate multi-domain language models with fairseq's own commands.

For every requested model it runs

1. ``fairseq-train --task multidomain_nas`` without ``--genotype`` (the architecture search; it
   writes ``genotype.json`` in its save dir),
2. ``fairseq-train ... --genotype <search>/genotype.json`` (retrain the derived model from scratch),
3. ``fairseq-eval-lm ... --gen-subset test --eval-domain D`` for every domain of the model,

then prints (and writes ``table.md`` / ``table.json``) the test perplexity per domain and the
parameter count of the retrained model, in all and in its cells alone (what depends on the
genotype), like the seed's LM table (docs/method.md, section 5). Every row's retraining is the
same command but for its genotype and folder (:func:`retrain_command`): the regularizers belong
to the search, the derived model is retrained with the plain loss.

Models (``--models``):
    single_<lang>  one domain, its own search (e.g. single_en)
    union          all domains, ONE shared architecture (--shared-architecture), domains mixed
    multi          all domains, one architecture per domain, no regularizer
    multi_struct   ... with the structural (JS) regularizer (--struct-coef)
    multi_contr    ... with the contrastive (triplet) regularizer (--contrastive-coef)
    multi_param    ... with the parameter penalty (--param-coef)
    random         --random-count random multimodel genotypes whose cell parameters (those that
                   depend on the genotype) are within 2% below the --random-reference model's search
                   (exact for the recurrent cell; run that model first), retrained with the same
                   protocol; the row gives their mean, spread and best
    perturbation   the genotype ``mdnas-derive --select perturbation`` (--perturb-flags) chooses from
                   the --random-reference model's search checkpoint (Wang et al., ICLR 2021; run that
                   model first), retrained and tested with the same protocol: the selection beside
                   argmax (the reference row itself) and the random rows; records its decisions
    baseline       a plain fairseq LM (--baseline-arch, --baseline-flags) on the union of the domains
    single_*       one single_<d> row per domain of the data

Protocols (``--protocol``, :data:`PROTOCOLS`): named settings applied as the defaults of the flags
(explicit flags still override them) and recorded in table.json / table.md. ``demo`` is the
parser's own defaults (``make demo`` and the earlier tables pass their sizes as flags); ``real`` is
the protocol of the real-scale tables of issue 26 (the whole gettext corpus: table L, en/de; table
G, the three genres in English; ``scripts/real_table.sh``), one entry per search space, picked by
the family of ``--arch`` (``mdnas_rnn*``: rnn, the default; ``mdnas_transformer_lm*``: transformer).
Its sizes are chosen so that one table of one space and one seed fits 100 minutes on one core (two
tables side by side on two cores), estimated by ``scripts/estimate_table_time.py`` from short runs
(20 and 120 updates of every kind of training, their CPU seconds per trained token, and the
perturbation selection without and with one fine-tune step), on the 2-core machine while other
jobs ran (commit 6837410): table L 78 minutes recurrent (32 dims, 6 nodes, search 1 epoch, retrain
2) and 84 Transformer (2 layers x 64 dims, search 1, retrain 3); table G 35 for either (from L's
costs, ``--costs-from``). The figures per row are in docs/language-models.md ("Real-scale tables").

With ``--search-seeds 1,2,3 --select-by-retrain-epochs N`` every searched model runs one search per
seed, retrains each genotype N epochs, keeps the one with the best VALIDATION loss and retrains it
fully; the candidates' scores go into table.json.

Example (the demo): ``python scripts/lm_pipeline.py --data build/demo-data/data-bin --out build/demo-run``
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

from mdnas_fairseq.provenance import display_path, git_commit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
USER_DIR = os.path.join(ROOT, "mdnas_fairseq")
BIN = os.path.dirname(sys.executable)
PERPLEXITY = re.compile(r"Loss \(base 2\): ([0-9.]+), Perplexity: ([0-9.]+|inf)")


def fairseq_cmd(name):
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        raise SystemExit(f"{name} not found next to {sys.executable}: run `make install` first")
    return path


def run(cmd, log_path, env_extra=None):
    """Run a command, logging to a file; on failure show the log's tail and stop."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    start = time.time()
    # The recurrent cell runs many small operations: extra OpenMP threads only spin (and slow
    # everything down badly when several processes share the cores), so one thread by default.
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(env_extra or {})
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    with open(log_path, encoding="utf-8") as f:
        text = f.read()
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-25:])
        raise SystemExit(f"command failed ({proc.returncode}), log {log_path}:\n{tail}")
    return text, time.time() - start


# mdnas_fairseq.search.random_genotypes.SHARING's names (importing it would load torch at start-up)
RANDOM_SHARING = ("independent", "copied")
SEARCHED = ("union", "multi", "multi_struct", "multi_contr", "multi_param")

# The named protocols (--protocol): per search space, the defaults of the pipeline's flags (keys are
# the parser's dests) plus ``model_flags``, the searchable model's fairseq-train flags (its sizes), put
# before the ones after ``--`` (so that those override them). ``schedule`` holds the fairseq-train
# flags of every training (searches, retrains, the baseline). Every key is recorded in table.json
# ("protocol") and table.md. ``demo`` is the parser's defaults.
REAL_MODELS = "single_*,union,multi,multi_struct,multi_contr,random,perturbation,baseline"
PROTOCOLS = {
    "demo": {"rnn": {}, "transformer": {}},
    "real": {
        # Table L (gettext en,de: 999k train tokens) estimated at 78 minutes on one core, table G
        # (the genres: 421k) at 35: searches 0.41 CPU ms per trained token (multi_contr 0.91, its
        # translations are trained too), retrains 0.071, lstm_lm 0.050, the perturbation selection
        # 3.8 min on L. DARTS' 8 nodes cost 0.64 ms per token in the search and L about 113
        # minutes, hence 6 nodes. The baseline has 156,960 parameters on L, the multimodel 150,264
        # (every edge shared) to 162,552 (none). The random genotypes copy nodes between domains at a
        # random rate (random_sharing): independent cells cannot match a search that shares every
        # edge, as the genre table's struct search did (table G, seed 1).
        "rnn": {
            "arch": "mdnas_rnn_tiny",
            "model_flags": "--embed-dim 32 --hidden-dim 32 --num-nodes 6",
            "schedule": "--lr-scheduler fixed",
            "batch_size": 64,
            "search_epochs": 1,
            "retrain_epochs": 2,
            "lr": 0.003,
            "clip_norm": 0.25,
            "alpha_order": 1,
            "alpha_lr": 0.1,
            "struct_coef": 0.1,
            "contrastive_coef": 0.1,
            "models": REAL_MODELS,
            "random_count": 4,
            "random_reference": "multi_struct",
            "random_sharing": "copied",
            "perturb_flags": "--perturb-batches 8 --perturb-finetune-steps 5",
            "baseline_arch": "lstm_lm",
            "baseline_flags": "--decoder-embed-dim 32 --decoder-hidden-size 64 "
            "--decoder-out-embed-dim 32 --share-decoder-input-output-embed --dropout 0.1",
        },
        # Table L estimated at 84 minutes on one core, table G at 35: searches 0.33 CPU ms per
        # token (multi_contr 0.65), retrains 0.078, transformer_lm 0.072, the perturbation
        # selection (8 decisions on L) 21 s; the search's lower cost buys a third retrain epoch.
        # The baseline has 359,552 parameters on L, the multimodel about 364,000-372,000.
        "transformer": {
            "arch": "mdnas_transformer_lm_tiny",
            "model_flags": "--decoder-layers 2 --decoder-embed-dim 64 --decoder-ffn-embed-dim 256 "
            "--decoder-attention-heads 4 --dropout 0.1",
            "schedule": "--lr-scheduler fixed",
            "batch_size": 64,
            "search_epochs": 1,
            "retrain_epochs": 3,
            "lr": 0.003,
            "clip_norm": 0.25,
            "alpha_order": 1,
            "alpha_lr": 0.1,
            "struct_coef": 0.1,
            "contrastive_coef": 0.1,
            "models": REAL_MODELS,
            "random_count": 4,
            "random_reference": "multi_struct",
            "random_sharing": "copied",
            "perturb_flags": "--perturb-batches 8 --perturb-finetune-steps 5",
            "baseline_arch": "transformer_lm",
            "baseline_flags": "--decoder-layers 2 --decoder-embed-dim 64 --decoder-ffn-embed-dim 256 "
            "--decoder-attention-heads 4 --decoder-input-dim 64 --decoder-output-dim 64 "
            "--share-decoder-input-output-embed --dropout 0.1",
        },
    },
}


def space_of(arch):
    """The search space (a key of a protocol) of a searchable architecture, else None."""
    if arch.startswith("mdnas_rnn"):
        return "rnn"
    if arch.startswith("mdnas_transformer_lm"):
        return "transformer"
    return None


def protocol_entry(name, arch=None):
    """(space, settings) of protocol ``name`` for the family of ``arch`` (None: the recurrent one)."""
    if name not in PROTOCOLS:
        raise SystemExit(f"--protocol {name}: unknown (known: {', '.join(PROTOCOLS)})")
    space = "rnn" if arch is None else space_of(arch)
    if space is None and any(PROTOCOLS[name].values()):
        raise SystemExit(
            f"--protocol {name}: --arch {arch} is in no search space of the protocols "
            "(mdnas_rnn*, mdnas_transformer_lm*)"
        )
    return space, dict(PROTOCOLS[name].get(space, {}))


def protocol_record(name, space, entry, args, added_flags):
    """What table.json records of the protocol: its name and space, its settings (``defaults``), the
    settings in effect (``settings``: ``model_flags`` with the flags given after ``--``) and those
    that explicit flags changed (``overridden``)."""
    settings = {k: getattr(args, k) for k in entry if k != "model_flags"}
    overridden = {k: v for k, v in settings.items() if v != entry[k]}
    if "model_flags" in entry:
        settings["model_flags"] = " ".join(entry["model_flags"].split() + list(added_flags))
        if added_flags:
            overridden["model_flags"] = settings["model_flags"]
    return {
        "name": name,
        "space": space,
        "defaults": dict(entry),
        "settings": settings,
        "overridden": overridden,
    }


def require_protocol(args):
    """A protocol other than ``demo`` is applied by :func:`parse_args`: a namespace parsed by
    :func:`build_parser` alone (another script's) would run with the demo's defaults."""
    if getattr(args, "protocol", "demo") != "demo" and not hasattr(args, "protocol_record"):
        raise SystemExit(
            f"--protocol {args.protocol}: only scripts/lm_pipeline.py's parse_args applies a protocol"
        )


def model_settings(name, domains, args):
    """(domains of the model, extra fairseq-train flags of its search) of a model name."""
    if name.startswith("single_"):
        lang = name[len("single_") :]
        if lang not in domains:
            raise SystemExit(f"model {name}: {lang!r} is not one of the data's domains {domains}")
        return [lang], []
    flags = {
        "union": ["--shared-architecture"],
        "multi": [],
        "multi_struct": ["--struct-coef", str(args.struct_coef)],
        "multi_contr": ["--contrastive-coef", str(args.contrastive_coef)],
        "multi_param": ["--param-coef", str(args.param_coef)],
        "random": [],
        "perturbation": [],
        "baseline": [],
    }
    if name not in flags:
        raise SystemExit(f"unknown model {name!r}: use single_<lang>, {', '.join(flags)}")
    return domains, flags[name]


def train_flags(args, domains, save_dir, epochs, seed=None, arch=None):
    """fairseq-train flags of the table's protocol; the flags after ``--`` are the searchable model's
    (a baseline of another ``arch`` gets ``--baseline-flags`` instead)."""
    require_protocol(args)
    flags = [
        args.data,
        "--user-dir",
        USER_DIR,
        "--task",
        "multidomain_nas",
        "--domains",
        ",".join(domains),
        "--arch",
        arch or args.arch,
        "--criterion",
        "multidomain_nas_loss",
        "--optimizer",
        "adam",
        "--lr",
        str(args.lr),
        "--clip-norm",
        str(args.clip_norm),
        "--batch-size",
        str(args.batch_size),
        "--max-epoch",
        str(epochs),
        "--seed",
        str(args.seed if seed is None else seed),
        "--save-dir",
        save_dir,
        "--no-epoch-checkpoints",
        "--log-format",
        "simple",
        "--log-interval",
        "50",
        "--num-workers",
        "0",
    ]
    if args.cpu:
        flags.append("--cpu")
    flags += getattr(args, "schedule", "").split()
    return flags + (args.extra if arch is None else [])


def search_flags(args):
    return [
        "--alpha-order",
        str(args.alpha_order),
        "--alpha-lr",
        str(args.alpha_lr),
    ] + args.search_flags.split()


# fairseq's older models (lstm_lm, the recurrent space's baseline) keep their settings in the
# checkpoint as an argparse.Namespace, which torch.load refuses by default (weights_only=True since
# PyTorch 2.6). The baselines' checkpoints are the pipeline's own: their fairseq-eval-lm loads them
# fully (torch's switch for calls that do not say weights_only, as fairseq's do not), and
# count_parameters allows the Namespace.
LEGACY_CHECKPOINT = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def count_parameters(checkpoint):
    """``sum(p.numel() for p in model.parameters())`` of the model the checkpoint builds: tied
    tensors count once (a state dict lists fairseq's tied output projection a second time) and
    buffers not at all."""
    import torch
    from fairseq import checkpoint_utils, utils

    utils.import_user_module(argparse.Namespace(user_dir=USER_DIR))
    with torch.serialization.safe_globals([argparse.Namespace]):
        models, _cfg = checkpoint_utils.load_model_ensemble([checkpoint])
    return sum(p.numel() for p in models[0].parameters())


def evaluate(args, checkpoint, domain, log_path, task="multidomain_nas"):
    """Test perplexity of one domain by fairseq-eval-lm (a plain fairseq LM: task language_modeling)."""
    if task == "multidomain_nas":
        subset = ["--task", "multidomain_nas", "--gen-subset", "test", "--eval-domain", domain]
    else:
        subset = ["--task", "language_modeling", "--gen-subset", f"test.{domain}"]
    cmd = [
        fairseq_cmd("fairseq-eval-lm"),
        args.data,
        "--user-dir",
        USER_DIR,
        "--path",
        checkpoint,
        "--sample-break-mode",
        "eos",
        "--batch-size",
        str(args.batch_size),
        "--num-workers",
        "0",
    ] + subset
    if args.cpu:
        cmd.append("--cpu")
    if task == "multidomain_nas":
        text, _ = run(cmd, log_path)
    else:  # a plain fairseq LM: see LEGACY_CHECKPOINT
        text, _ = run(cmd, log_path, LEGACY_CHECKPOINT)
    found = PERPLEXITY.findall(text)
    if not found:
        raise SystemExit(f"no perplexity in {log_path}")
    return float(found[-1][1])


def best_valid_loss(log_text):
    """The best validation loss a fairseq-train log reports (its last 'best_loss', else the min loss)."""
    best = re.findall(r"\| valid on 'valid' subset \| loss ([0-9.]+)", log_text)
    if not best:
        raise SystemExit("no validation loss in the log")
    return min(float(x) for x in best)


def retrain_command(args, domains, genotype, retrain_dir, shared, epochs=None):
    """The fairseq-train command that retrains ``genotype`` from scratch with the table's protocol:
    the same for every row but for the genotype and the folder (``shared`` is ``--shared-architecture``
    for a union genotype, whose one cell serves every domain; a single model has one domain)."""
    return (
        [fairseq_cmd("fairseq-train")]
        + train_flags(args, domains, retrain_dir, epochs or args.retrain_epochs)
        + ["--genotype", genotype]
        + shared
    )


def retrain_and_test(args, domains, genotype, base, shared, tag="retrain", epochs=None):
    """Retrain a genotype from scratch with the table's protocol; test perplexity per domain."""
    retrain_dir = os.path.join(base, tag)
    text, seconds = run(
        retrain_command(args, domains, genotype, retrain_dir, shared, epochs),
        os.path.join(base, f"{tag}.log"),
    )
    checkpoint = os.path.join(retrain_dir, "checkpoint_best.pt")
    if epochs is not None:  # a short selection retrain: its validation loss only
        return {"valid_loss": best_valid_loss(text), "seconds": round(seconds, 1)}
    ppl = {
        d: evaluate(args, checkpoint, d, os.path.join(base, f"eval_{tag}_{d}.log")) for d in domains
    }
    return {"test_ppl": ppl, "params": count_parameters(checkpoint), "seconds": round(seconds, 1)}


def search(args, domains, extra, base, seed):
    """One search; returns its genotype.json path and wall seconds."""
    search_dir = os.path.join(
        base, f"search_seed{seed}" if len(args.search_seed_list) > 1 else "search"
    )
    _, seconds = run(
        [fairseq_cmd("fairseq-train")]
        + train_flags(args, domains, search_dir, args.search_epochs, seed)
        + search_flags(args)
        + extra,
        os.path.join(base, f"{os.path.basename(search_dir)}.log"),
    )
    return os.path.join(search_dir, "genotype.json"), round(seconds, 1)


def run_model(name, domains_all, args):
    domains, extra = model_settings(name, domains_all, args)
    base = os.path.join(args.out, name)
    if os.path.isdir(base):  # fairseq-train would resume from an old checkpoint_last.pt
        shutil.rmtree(base)
    if name == "random":
        return run_random(domains, args, base)
    if name == "baseline":
        return run_baseline(domains, args, base)
    if name == "perturbation":
        return run_perturbation(domains, args, base)
    shared = retrain_shared_flags(extra)
    candidates = []
    for seed in args.search_seed_list:
        genotype, t_search = search(args, domains, extra, base, seed)
        candidates.append({"seed": seed, "genotype": genotype, "search_seconds": t_search})
    chosen = candidates[0]
    if len(candidates) > 1 and args.select_by_retrain_epochs > 0:
        for c in candidates:  # selection on the validation split, never the test split
            c.update(
                retrain_and_test(
                    args,
                    domains,
                    c["genotype"],
                    base,
                    shared,
                    tag=f"select_seed{c['seed']}",
                    epochs=args.select_by_retrain_epochs,
                )
            )
        chosen = min(candidates, key=lambda c: c["valid_loss"])
    genotype = os.path.join(base, "genotype.json")  # the chosen search's genotype
    shutil.copyfile(chosen["genotype"], genotype)
    result = retrain_and_test(args, domains, genotype, base, shared)
    with open(genotype, encoding="utf-8") as f:
        g = json.load(f)
    return {
        "model": name,
        "domains": domains,
        "test_ppl": result["test_ppl"],
        "params": result["params"],
        "params_from_genotype": g["param_counts"]["multimodel"],
        "cell_params": genotype_cell_params(genotype),
        "agreement_edges": _agreement(g),
        "decisiveness": _decisiveness(g),
        "search_seed": chosen["seed"],
        "search_candidates": [
            {k: (display_path(v) if k == "genotype" else v) for k, v in c.items()}
            for c in candidates
        ],
        "search_seconds": sum(c["search_seconds"] for c in candidates),
        "retrain_seconds": result["seconds"],
        "genotype": display_path(genotype),
    }


def retrain_shared_flags(search_extra):
    """What a model's retraining adds to :func:`retrain_command` beyond its genotype: only
    ``--shared-architecture`` (how a union genotype is read), never a regularizer of the search."""
    return ["--shared-architecture"] if "--shared-architecture" in search_extra else []


def genotype_cell_params(path):
    """The parameters of a genotype file's multimodel that depend on the genotype (its cells)."""
    from mdnas_fairseq.derive import load_search

    _, genotype, table = load_search(path)
    return table.multimodel_cell_count(genotype)


def run_random(domains, args, base):
    """``args.random_count`` random multimodel genotypes whose cell parameters are within 2% below
    those of the reference search (``--random-reference``; exact for the recurrent cell), retrained
    with the searched rows' protocol."""
    import numpy as np

    from mdnas_fairseq.derive import derive_random, write_derived

    reference = os.path.join(args.out, args.random_reference, "genotype.json")
    if not os.path.isfile(reference):
        raise SystemExit(
            f"model random: {reference} not found: run --models {args.random_reference},random"
        )
    runs = []
    for k in range(args.random_count):
        genotype, table, record = derive_random(
            reference, args.seed * 1000 + k, match=True, sharing=args.random_sharing
        )
        path = os.path.join(base, f"random{k}", "genotype.json")
        write_derived(path, genotype, table, record)
        target = record["target_cell_params"]
        result = retrain_and_test(args, domains, path, os.path.join(base, f"random{k}"), [])
        cells = table.multimodel_cell_count(genotype)
        runs.append(
            {
                "genotype": display_path(path),
                "draws": record["draws"],
                "cell_params": cells,
                **result,
            }
        )
        print(
            f"   random {k}: test ppl {result['test_ppl']}, params {result['params']:,} "
            f"(cells {cells:,}, {record['draws']} draws)",
            flush=True,
        )
    ppl = {d: [r["test_ppl"][d] for r in runs] for d in domains}
    return {
        "model": "random",
        "domains": domains,
        "test_ppl": {d: float(np.mean(v)) for d, v in ppl.items()},
        "test_ppl_std": {
            d: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for d, v in ppl.items()
        },
        "test_ppl_best": {d: float(min(v)) for d, v in ppl.items()},
        "params": int(round(float(np.mean([r["params"] for r in runs])))),
        "params_range": [min(r["params"] for r in runs), max(r["params"] for r in runs)],
        "cell_params": int(round(float(np.mean([r["cell_params"] for r in runs])))),
        "cell_params_target": target,
        "sharing": args.random_sharing,
        "agreement_edges": None,
        "runs": runs,
        "retrain_seconds": sum(r["seconds"] for r in runs),
    }


def reference_search_dir(args):
    """The save dir of the --random-reference model's (chosen) search: its checkpoint_last.pt is the
    supernetwork the perturbation selection measures."""
    ref = os.path.join(args.out, args.random_reference)
    genotype = os.path.join(ref, "genotype.json")
    if not os.path.isfile(genotype):
        raise SystemExit(
            f"model perturbation: {genotype} not found: run --models {args.random_reference},"
            "perturbation"
        )
    with open(genotype, encoding="utf-8") as f:
        chosen = f.read()
    dirs = [os.path.join(ref, "search")] + [
        os.path.join(ref, f"search_seed{seed}") for seed in args.search_seed_list
    ]
    for d in dirs:  # with several search seeds, the one whose genotype the reference kept
        path = os.path.join(d, "genotype.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                if f.read() == chosen:
                    return d
    raise SystemExit(f"model perturbation: no search of {ref} wrote its genotype.json")


def run_perturbation(domains, args, base):
    """The genotype perturbation selection (``mdnas-derive --select perturbation``, with
    ``--perturb-flags``) chooses from the reference model's search checkpoint, retrained and tested
    with the rows' protocol (:func:`retrain_command`, as every row)."""
    search_dir = reference_search_dir(args)
    genotype = os.path.join(base, "genotype.json")
    cmd = [fairseq_cmd("mdnas-derive"), search_dir, "--select", "perturbation", "--out", genotype]
    cmd += args.perturb_flags.split() + (["--cpu"] if args.cpu else [])
    _, t_select = run(cmd, os.path.join(base, "derive.log"))
    _, extra = model_settings(args.random_reference, domains, args)
    result = retrain_and_test(args, domains, genotype, base, retrain_shared_flags(extra))
    with open(genotype, encoding="utf-8") as f:
        g = json.load(f)
    record = g["derived_by"]
    return {
        "model": "perturbation",
        "domains": domains,
        "test_ppl": result["test_ppl"],
        "params": result["params"],
        "params_from_genotype": g["param_counts"]["multimodel"],
        "cell_params": genotype_cell_params(genotype),
        "agreement_edges": _agreement(g),
        "selected_from": display_path(search_dir),
        "reference": args.random_reference,
        "decisions": len(record["decisions"]),
        "finetunes": record["finetunes"],
        "differs_from_argmax": record["differs_from_argmax"],
        "perturb_flags": args.perturb_flags,
        "selection_seconds": round(t_select, 1),
        "retrain_seconds": result["seconds"],
        "genotype": display_path(genotype),
    }


def run_baseline(domains, args, base):
    """A plain fairseq LM (``--baseline-arch``, default fairseq's transformer_lm) on the union of the
    domains, with the same data, epochs, optimizer and seed; tested with task language_modeling."""
    train = fairseq_cmd("fairseq-train")
    save = os.path.join(base, "train")
    _, seconds = run(
        [train]
        + train_flags(args, domains, save, args.retrain_epochs, arch=args.baseline_arch)
        + args.baseline_flags.split(),
        os.path.join(base, "train.log"),
    )
    checkpoint = os.path.join(save, "checkpoint_best.pt")
    ppl = {
        d: evaluate(
            args, checkpoint, d, os.path.join(base, f"eval_{d}.log"), task="language_modeling"
        )
        for d in domains
    }
    return {
        "model": "baseline",
        "arch": args.baseline_arch,
        "domains": domains,
        "test_ppl": ppl,
        "params": count_parameters(checkpoint),
        "agreement_edges": None,
        "retrain_seconds": round(seconds, 1),
    }


def _agreement(g):
    """Share of the union's edges on which every domain chose the same operation."""
    from mdnas_fairseq.search import genotype_from_dict

    return genotype_from_dict(g).agreement()


def _decisiveness(g):
    """Per architecture: mean entropy and best-minus-second margin of the final softmax(alpha)."""
    import torch

    from mdnas_fairseq.search import edge_entropy, edge_margin, genotype_from_dict

    space = genotype_from_dict(g).space
    out = {}
    for name, probs in g.get("alpha", {}).items():
        p = torch.tensor(probs, dtype=torch.float64)
        out[name] = {"entropy": float(edge_entropy(p)), "margin": float(edge_margin(p, space))}
    return out


def _minutes(r):
    """'search / retrain' minutes of a row (the perturbation row: its selection, not the search it
    reuses)."""
    search = r.get("search_seconds", r.get("selection_seconds"))
    search = "-" if search is None else f"{search / 60:.1f}"
    return f"{search} / {r['retrain_seconds'] / 60:.1f}"


def format_table(rows, domains):
    head = (
        "| model | "
        + " | ".join(f"{d} ppl" for d in domains)
        + " | params | cell params | edges agreed | search / retrain min |"
    )
    lines = [head, "|" + "---|" * (len(domains) + 5)]
    for r in rows:
        cells = []
        for d in domains:
            if d not in r["test_ppl"]:
                cells.append("-")
            elif "test_ppl_std" in r:
                cells.append(
                    f"{r['test_ppl'][d]:.2f} ± {r['test_ppl_std'][d]:.2f} (best {r['test_ppl_best'][d]:.2f})"
                )
            else:
                cells.append(f"{r['test_ppl'][d]:.2f}")
        agreed = "-"
        if r.get("agreement_edges") is not None and len(r["domains"]) > 1 and r["model"] != "union":
            agreed = f"{100 * r['agreement_edges']:.0f}%"
        label = f"{r['model']} ({len(r['runs'])} genotypes)" if "runs" in r else r["model"]
        if r["model"] == "baseline":
            label = f"baseline ({r['arch']})"
        if r["model"] == "perturbation":
            label = f"perturbation (of {r['reference']}'s search, {r['decisions']} decisions)"
        cell_params = "-" if r.get("cell_params") is None else f"{r['cell_params']:,}"
        params = f"{r['params']:,}"
        if "params_range" in r:  # random rows: the mean, and the range of the draws
            low, high = r["params_range"]
            params += f" ({low:,}-{high:,})" if low != high else ""
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {params} | {cell_params} | {agreed} | {_minutes(r)} |"
        )
    return "\n".join(lines)


def against_random(rows, domains, reference):
    """Per selection of the reference search (argmax: the reference row; perturbation) and domain:
    (random mean - its perplexity) / the random rows' standard deviation, positive when it beats
    chance; None without a random row of at least two genotypes."""
    by = {r["model"]: r for r in rows}
    rnd = by.get("random")
    if rnd is None or len(rnd.get("runs", [])) < 2:
        return None
    out = {}
    for name, label in ((reference, f"{reference} (argmax)"), ("perturbation", "perturbation")):
        if name in by:
            out[label] = {
                d: (rnd["test_ppl"][d] - by[name]["test_ppl"][d]) / rnd["test_ppl_std"][d]
                if rnd["test_ppl_std"][d] > 0
                else None
                for d in domains
            }
    return out


def format_against_random(margins):
    if not margins:
        return ""
    parts = [
        f"{label}: "
        + ", ".join(f"{d} {'-' if z is None else f'{z:+.2f}'}" for d, z in per_domain.items())
        for label, per_domain in margins.items()
    ]
    return (
        "Against the random rows, in their standard deviations (random mean minus the row's "
        "perplexity; positive: better than chance): " + "; ".join(parts) + "."
    )


def format_protocol(record):
    s = record["settings"]
    if not s:
        return f"Protocol `{record['name']}`: the pipeline's defaults and the flags of the command."
    changed = ", ".join(f"{k}" for k in record["overridden"]) or "none"
    return (
        f"Protocol `{record['name']}` ({record['space']} space): "
        + "; ".join(f"{k} `{v}`" for k, v in s.items())
        + f". Changed by flags: {changed}."
    )


def build_parser():
    """The pipeline's command line (scripts/sweep.py passes its settings through it)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="reads: --data, a data-bin made by mdnas-prepare (scripts/prepare_parallel.py)\n"
        "writes: --out/table.md and --out/table.json (test perplexity per domain, parameters,\n"
        "  settings, commit), and per model --out/<model>/ (search/ and retrain/ save dirs with\n"
        "  genotype.json and checkpoints, the fairseq logs)",
    )
    p.add_argument("--data", required=True, help="input: data-bin made by mdnas-prepare")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per model)")
    p.add_argument(
        "--protocol",
        default="demo",
        choices=tuple(PROTOCOLS),
        help="named settings used as the defaults of these flags (explicit flags override them) "
        "and recorded in the results; real: the real-scale tables' (one entry per search space, "
        "by --arch's family; estimated 78 (recurrent) and 84 (Transformer) minutes on one core for "
        "gettext en,de, 35 for its genres; see PROTOCOLS in this script and "
        "docs/language-models.md) (default: %(default)s, the defaults shown here)",
    )
    p.add_argument(
        "--models",
        default="single_en,union,multi_struct",
        help="rows of the table: single_<lang> (single_*: one per domain), union, multi, "
        "multi_struct, multi_contr (left out, with a note, on data that is not parallel), "
        "multi_param, random, perturbation, baseline (default: %(default)s)",
    )
    p.add_argument("--arch", default="mdnas_rnn_tiny")
    p.add_argument("--search-epochs", type=int, default=3)
    p.add_argument("--retrain-epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--clip-norm", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--alpha-order", type=int, default=1)
    p.add_argument(
        "--alpha-lr",
        type=float,
        default=0.1,
        help="alpha learning rate (the most decided of the settings in "
        "results/decisive_lm.md within the demo's budget)",
    )
    p.add_argument("--struct-coef", type=float, default=0.1)
    p.add_argument("--contrastive-coef", type=float, default=0.1)
    p.add_argument(
        "--param-coef", type=float, default=0.1, help="beta_param of the multi_param model"
    )
    p.add_argument(
        "--search-flags", default="", help="more fairseq-train flags for the searches only"
    )
    p.add_argument(
        "--seed", type=int, default=1, help="seed of the retraining (and of the search, by default)"
    )
    p.add_argument("--search-seeds", default="", help="search seeds, e.g. 1,2,3 (default: --seed)")
    p.add_argument(
        "--select-by-retrain-epochs",
        type=int,
        default=0,
        help="with several search seeds: retrain each genotype this many epochs and keep the one with "
        "the best validation loss (the DARTS authors' selection protocol)",
    )
    p.add_argument(
        "--random-count", type=int, default=5, help="random genotypes of the random model"
    )
    p.add_argument(
        "--random-sharing",
        default="independent",
        choices=RANDOM_SHARING,
        help="how the random genotypes' domains relate (mdnas-derive --random-sharing): independent "
        "cells, or nodes copied between domains at a random rate, which can match a search whose "
        "domains agree on every edge",
    )
    p.add_argument(
        "--random-reference",
        default="multi_struct",
        help="searched model whose multimodel cell parameters the random genotypes match "
        "(within 2%% below)",
    )
    p.add_argument(
        "--baseline-arch",
        default="transformer_lm",
        help="fairseq architecture of the baseline model",
    )
    p.add_argument(
        "--baseline-flags", default="", help="fairseq-train flags of the baseline only (its sizes)"
    )
    p.add_argument(
        "--schedule",
        default="",
        help="fairseq-train flags of every training (searches, retrains, baseline), e.g. the "
        "learning-rate schedule (default: none, fairseq's fixed rate)",
    )
    p.add_argument(
        "--perturb-flags",
        default="",
        help="mdnas-derive flags of the perturbation row (default: mdnas-derive's)",
    )
    p.add_argument("--no-cpu", dest="cpu", action="store_false", help="let fairseq use a GPU")
    p.add_argument("extra", nargs="*", help="more fairseq-train flags, after --")
    return p


def parse_args(argv=None, parser=None):
    """The pipeline's settings: ``--protocol``'s entry for ``--arch``'s search space as the defaults
    (parsed twice: first to know the protocol and the architecture), the flags given over them.
    ``parser``: another script's parser built on :func:`build_parser`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = parser or build_parser()
    first = parser.parse_args(argv)
    space, entry = protocol_entry(first.protocol, first.arch)
    parser.set_defaults(**{k: v for k, v in entry.items() if k != "model_flags"})
    args = parser.parse_args(argv)
    if space_of(args.arch) != space and entry:  # the protocol's own --arch of another space
        raise SystemExit(f"--protocol {args.protocol}: --arch {args.arch} is not a {space} model")
    added = list(args.extra)
    args.extra = entry.get("model_flags", "").split() + added
    args.protocol_record = protocol_record(args.protocol, space, entry, args, added)
    args.search_seed_list = [int(x) for x in args.search_seeds.split(",") if x.strip()] or [
        args.seed
    ]
    return args


def data_metadata(data):
    """The ``mdnas_data.json`` of a data-bin made by scripts/prepare_parallel.py."""
    meta_path = os.path.join(data, "mdnas_data.json")
    if not os.path.isfile(meta_path):
        raise SystemExit(f"{meta_path} not found: make the data with scripts/prepare_parallel.py")
    with open(meta_path, encoding="utf-8") as f:
        return json.load(f)


def data_langs(data):
    """The languages (domains) of a data-bin made by scripts/prepare_parallel.py."""
    return data_metadata(data)["langs"]


def table_models(models, domains, parallel=True):
    """(rows to run, rows left out with why) of a --models list: ``single_*`` is one single_<d> per
    domain; multi_contr needs parallel data (a --domain-column data-bin is not)."""
    rows, skipped = [], {}
    for name in [m.strip() for m in models.split(",") if m.strip()]:
        if name == "single_*":
            rows += [f"single_{d}" for d in domains if f"single_{d}" not in rows]
        elif name == "multi_contr" and not parallel:
            skipped[name] = "the data is not parallel (the contrastive term pairs translations)"
        elif name not in rows:
            rows.append(name)
    return rows, skipped


def main(argv=None):
    args = parse_args(argv)
    meta = data_metadata(args.data)
    domains = meta["langs"]
    models, skipped = table_models(args.models, domains, meta.get("parallel", True))
    for name, why in skipped.items():
        print(f"== {name}: left out: {why}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in models:
        print(
            f"== {name}: search {args.search_epochs} epochs, retrain {args.retrain_epochs} epochs",
            flush=True,
        )
        row = run_model(name, domains, args)
        print(
            f"   test ppl {row['test_ppl']}, params {row['params']:,} "
            f"(search {row.get('search_seconds', row.get('selection_seconds', 0))}s, "
            f"retrain {row['retrain_seconds']}s)",
            flush=True,
        )
        rows.append(row)
    table = format_table(rows, domains)
    settings = {k: v for k, v in vars(args).items() if k != "protocol_record"}
    settings.update({k: display_path(settings[k]) for k in ("data", "out")})
    commit = git_commit(ROOT)
    command = "python scripts/lm_pipeline.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    margins = against_random(rows, domains, args.random_reference)
    result = {
        "command": command,
        "commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "protocol": args.protocol_record,
        "settings": settings,
        "rows": rows,
        "skipped": skipped,
        "against_random": margins,
    }
    with open(os.path.join(args.out, "table.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    notes = [format_protocol(args.protocol_record), format_against_random(margins)]
    notes += [f"Left out: {name}: {why}." for name, why in skipped.items()]
    if any(r["model"] == "perturbation" for r in rows):
        notes.append(
            "The perturbation row's search minutes are its selection's (it reuses the "
            f"{args.random_reference} search)."
        )
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
        f.write(
            f"Test perplexity per domain (retrained derived models), seed {args.seed}, commit {commit}\n\n"
            f"Command: `{command}`\n\n{table}\n\n" + "\n\n".join(n for n in notes if n) + "\n"
        )
    print(
        f"\nTest perplexity per domain of the retrained models (seed {args.seed}, {args.arch}):\n"
    )
    print(table)
    return rows


if __name__ == "__main__":
    main()
