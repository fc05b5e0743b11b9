#!/usr/bin/env python
"""Multi-domain translation table (issue 27, item 4): BLEU and chrF per domain of the searched
multimodels against fairseq's transformer, per-domain models and random multimodels.

From a data-bin made by ``mdnas-prepare --translation SRC-TGT --domain-column COL`` it trains,
each with ``fairseq-train`` in a subprocess (the same optimizer, learning rate, batch tokens,
label smoothing, epochs and seed for every row), these rows:

multi_struct  ``--task multidomain_nas_translation`` search with the struct term
              (``--struct-coef``), its genotype retrained from scratch (``--genotype``)
multi_struct_selected
              the struct search at ``--selection-searches`` seeds (``--seed + 1000 k``; k = 0
              is multi_struct's own search), each genotype retrained for ``--selection-epochs``
              (seed ``--seed + 500``, not the final retrain's) and translated on the valid split:
              the genotype of the best mean valid BLEU is retrained from scratch as multi_struct's
              (selection (c) of the real-scale issue; the test split never chooses)
multi         the same without the struct term (``--struct-coef 0``)
random_K      for each K of ``--random-seeds``: ``mdnas-derive SEARCH --random-seed K
              --match-params --random-sharing copied`` on multi_struct's search (every domain's
              cell drawn at random, nodes copied between domains at a random rate, redrawn until
              the multimodel's cell parameters are within ``--match-tolerance`` below the
              searched one's), retrained with the same protocol
union         one model per domain: a search on that domain alone (``--domains D``), retrained on
              it; the row gives each domain its own model's scores, the parameters of all of them
baseline      fairseq's own ``--arch transformer`` (pre-LayerNorm, ``--share-all-embeddings``, the
              searched model's layers, width and heads; the FFN width solved so that its
              parameter count is nearest multi_struct's) trained with ``--task translation`` on
              all domains together: ``--out/baseline-data`` holds the data-bin's joined
              dictionary and ``{train,valid}.SRC-TGT.{SRC,TGT}``, every domain's split
              concatenated with fairseq's own ``MMapIndexedDatasetBuilder.merge_file_`` (what
              fairseq-preprocess does with its workers' shards)

Every row is scored the same way (scripts/score_translation.py's code): each domain's
``--split`` (default test) translated by fairseq's beam search (``--beam``), the sentencepiece
pieces joined (``--remove-bpe sentencepiece``), sacrebleu's corpus BLEU and chrF against the
untokenised references ``mdnas-prepare`` kept in ``DATA/../raw``; the hypotheses are written to
``--out/<row>/hyp/{split}.{domain}.hyp`` (line i translates reference line i) and sacrebleu's
signatures recorded. The checkpoint scored is each training's ``checkpoint_best.pt`` (lowest
valid loss; with ``--eval-bleu``, highest valid BLEU as fairseq's translation task computes it).

Example (the gettext genres; defaults sized for a 2-core CPU, hours):
  mdnas-prepare --tsv ../shared/data/parallel/gettext.en-de.tsv --translation en-de \\
      --domain-column source --vocab-size 8000 --out build/gettext-mt
  python scripts/translation_table.py --data build/gettext-mt/data-bin --out build/mt-table

On two cores, the same table as two processes side by side, then one table of their rows:
  python scripts/translation_table.py --data D --out T-a --rows multi_struct,random,baseline &
  python scripts/translation_table.py --data D --out T-b --rows multi,union
  python scripts/translation_table.py --merge T-a T-b --out T

Flags after ``--`` go to every mdnas fairseq-train (searches and retrains; e.g. the model's sizes
``-- --embed-dim 32``), never to the baseline (``--baseline-flags``).
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from argparse import Namespace

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]  # a checkout; lm_pipeline's and score_translation's functions

import lm_pipeline as lm  # noqa: E402
import score_translation as scorer  # noqa: E402

from mdnas_fairseq.provenance import display_path, git_commit  # noqa: E402

ROWS = ("multi_struct", "multi_struct_selected", "multi", "random", "union", "baseline")
SEARCH_SEED_STEP = 1000  # the selected row's candidate k searches at --seed + 1000 * k
SELECTION_RETRAIN_SEED = 500  # its short retrains at --seed + 500: not the final retrain's seed
# the settings only the rows named use: parts of one table that did not run a row may differ in
# them (a row added to an existing table, --merge)
ROW_SETTINGS = {"multi_struct_selected": ("selection_searches", "selection_epochs")}
# the random rows' settings: parts may differ in them (more random rows added to a table), the
# merged table's random_seeds are its random rows', and every random row must match one size
RANDOM_SETTINGS = ("random_seeds", "random_reference")
MATCH_TOLERANCE = 0.02
NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"  # torch.load's switch, read at every call


# ---------------------------------------------------------------------------- command lines
def common_flags(args, save_dir, epochs, seed=None):
    """The training protocol every row shares (optimizer, batches, epochs, seed, logging); the
    seed is ``--seed`` unless given (the selection's candidate searches and short retrains)."""
    flags = [
        "--optimizer",
        "adam",
        "--adam-betas",
        "(0.9, 0.98)",
        "--lr",
        str(args.lr),
        "--clip-norm",
        str(args.clip_norm),
        "--max-tokens",
        str(args.max_tokens),
        "--label-smoothing",
        str(args.label_smoothing),
        "--dropout",
        str(args.dropout),
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
        "--required-batch-size-multiple",
        "1",
    ]  # fmt: skip  (batches of any size: fairseq's default multiple of 8 empties tiny splits)
    if args.eval_bleu:
        flags += [
            "--eval-bleu", "--eval-bleu-remove-bpe", "sentencepiece", "--eval-bleu-args",
            json.dumps({"beam": args.beam, "max_len_a": args.max_len_a,
                        "max_len_b": args.max_len_b}),
            "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric",
        ]  # fmt: skip
    if args.cpu:
        flags.append("--cpu")
    return flags


def mdnas_command(args, domains, save_dir, epochs, extra=(), seed=None):
    """fairseq-train of the searchable encoder-decoder (a search, or a retrain with --genotype)."""
    return (
        [lm.fairseq_cmd("fairseq-train"), args.data, "--user-dir", lm.USER_DIR,
         "--task", "multidomain_nas_translation", "--domains", ",".join(domains),
         "--arch", args.arch, "--criterion", "multidomain_nas_loss"]
        + common_flags(args, save_dir, epochs, seed)
        + list(args.extra)
        + list(extra)
    )  # fmt: skip


def baseline_command(args, data, save_dir, ffn):
    """fairseq-train of fairseq's own transformer on the concatenated domains."""
    s = args.model_sizes
    return (
        [lm.fairseq_cmd("fairseq-train"), data, "--task", "translation",
         "-s", args.meta["source_lang"], "-t", args.meta["target_lang"],
         "--arch", "transformer", "--share-all-embeddings",
         "--encoder-normalize-before", "--decoder-normalize-before",
         "--encoder-layers", str(s["encoder_layers"]), "--decoder-layers", str(s["decoder_layers"]),
         "--encoder-embed-dim", str(s["embed_dim"]), "--decoder-embed-dim", str(s["embed_dim"]),
         "--encoder-attention-heads", str(s["attention_heads"]),
         "--decoder-attention-heads", str(s["attention_heads"]),
         "--encoder-ffn-embed-dim", str(ffn), "--decoder-ffn-embed-dim", str(ffn),
         "--criterion", "label_smoothed_cross_entropy"]
        + common_flags(args, save_dir, args.retrain_epochs)
        + args.baseline_flags.split()
    )  # fmt: skip


# ---------------------------------------------------------------------------- scoring
def score_checkpoint(args, checkpoint, domains, hyp_dir, split=None):
    """BLEU, chrF (sacrebleu, detokenised), sentences per domain, the signatures and the model's
    parameters, for a checkpoint of ``multidomain_nas_translation`` or fairseq's ``translation``
    (both read the data-bin's per-domain split ``{split}.{domain}``; ``--split`` unless given)."""
    split = args.split if split is None else split
    import torch
    from fairseq import checkpoint_utils

    # fairseq's own transformer keeps its (legacy) model arguments as an argparse.Namespace, and
    # its --eval-bleu numpy arrays: torch.load's weights_only default (PyTorch 2.6) refuses both.
    # The checkpoint is one this script has just trained: loaded without weights_only.
    previous = os.environ.get(NO_WEIGHTS_ONLY)
    os.environ[NO_WEIGHTS_ONLY] = "1"
    try:
        models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [checkpoint], arg_overrides={"data": args.data}
        )
    finally:
        if previous is None:
            del os.environ[NO_WEIGHTS_ONLY]
        else:
            os.environ[NO_WEIGHTS_ONLY] = previous
    for m in models:
        m.eval()
    cuda = torch.cuda.is_available() and not args.cpu
    if cuda:
        models = [m.cuda() for m in models]
    generator = task.build_generator(
        models,
        Namespace(
            beam=args.beam, lenpen=args.lenpen, max_len_a=args.max_len_a, max_len_b=args.max_len_b
        ),
    )
    os.makedirs(hyp_dir, exist_ok=True)
    out = {"bleu": {}, "chrf": {}, "sentences": {}, "hypotheses": {}}
    for d in domains:
        subset = f"{split}.{d}"
        task.load_dataset(subset)
        refs = scorer.references(args.data, split, d, args.meta)
        found = scorer.translate(task, models, generator, subset, args.score_batch_size, cuda)
        if sorted(found) != list(range(len(refs))):
            raise SystemExit(f"{checkpoint} {subset}: {len(found)} translations, {len(refs)} refs")
        hyps = [found[i] for i in range(len(refs))]
        path = os.path.join(hyp_dir, f"{subset}.hyp")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(h + "\n" for h in hyps)
        bleu, chrf, bleu_sig, chrf_sig = scorer.score(hyps, refs)
        out["bleu"][d], out["chrf"][d], out["sentences"][d] = bleu, chrf, len(refs)
        out["hypotheses"][d] = display_path(path)
        out["signatures"] = {"bleu": bleu_sig, "chrf": chrf_sig}
    out["params"] = sum(p.numel() for p in models[0].parameters())
    return out


# ---------------------------------------------------------------------------- rows
def fresh(folder):
    """An empty folder (fairseq-train would resume from an old checkpoint_last.pt)."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)


def minutes(seconds):
    return round(seconds / 60, 2)


def search(args, domains, base, extra, seed=None, tag="search"):
    """One architecture search; returns its genotype.json and its minutes."""
    save = os.path.join(base, tag)
    flags = args.search_flags.split() + extra
    cmd = mdnas_command(args, domains, save, args.search_epochs, flags, seed)
    _, seconds = lm.run(cmd, os.path.join(base, f"{tag}.log"))
    return os.path.join(save, "genotype.json"), minutes(seconds)


def retrain_and_score(args, domains, genotype, base):
    """The genotype retrained from scratch (the searched rows' protocol), then scored."""
    save = os.path.join(base, "retrain")
    cmd = mdnas_command(args, domains, save, args.retrain_epochs, ["--genotype", genotype])
    _, seconds = lm.run(cmd, os.path.join(base, "retrain.log"))
    checkpoint = os.path.join(save, "checkpoint_best.pt")
    scores = score_checkpoint(args, checkpoint, domains, os.path.join(base, "hyp"))
    with open(genotype, encoding="utf-8") as f:
        counts = json.load(f)["param_counts"]
    scores.update(
        train_minutes=minutes(seconds),
        params_from_genotype=counts["multimodel"],
        cell_params=counts["multimodel_cells"],
        checkpoint=display_path(checkpoint),
        genotype=display_path(genotype),
    )
    return scores


def searched_row(args, name, domains, struct_coef):
    base = os.path.join(args.out, name)
    fresh(base)
    genotype, search_minutes = search(args, domains, base, ["--struct-coef", str(struct_coef)])
    row = {"row": name, "domains": domains, "struct_coef": struct_coef}
    row.update(retrain_and_score(args, domains, genotype, base), search_minutes=search_minutes)
    return row


def selection_candidate(args, domains, base, struct_coef, k):
    """Candidate ``k`` of the selected row: a search at seed ``--seed + SEARCH_SEED_STEP * k``,
    its genotype retrained for ``--selection-epochs`` at seed ``--seed + SELECTION_RETRAIN_SEED``
    and scored (BLEU per domain) on the valid split."""
    seed = args.seed + SEARCH_SEED_STEP * k
    tag = f"search_seed{seed}"
    genotype, search_minutes = search(
        args, domains, base, ["--struct-coef", str(struct_coef)], seed=seed, tag=tag
    )
    save = os.path.join(base, f"select_seed{seed}")
    cmd = mdnas_command(
        args, domains, save, args.selection_epochs, ["--genotype", genotype],
        seed=args.seed + SELECTION_RETRAIN_SEED,
    )  # fmt: skip
    _, seconds = lm.run(cmd, os.path.join(base, f"select_seed{seed}.log"))
    start = time.perf_counter()
    valid = score_checkpoint(
        args, os.path.join(save, "checkpoint_best.pt"), domains, os.path.join(save, "hyp"), "valid"
    )
    seconds += time.perf_counter() - start
    return {
        "search_seed": seed,
        "genotype": genotype,
        "search_minutes": search_minutes,
        "selection_minutes": minutes(seconds),
        "valid_bleu": valid["bleu"],
        "valid_bleu_mean": sum(valid["bleu"].values()) / len(domains),
    }


def selected_row(args, name, domains, struct_coef):
    """The struct search run at ``--selection-searches`` seeds (the first: multi_struct's own),
    the genotype whose short retrain has the best mean valid BLEU retrained and scored as every
    searched row's (selection on the valid split; the test split never chooses)."""
    base = os.path.join(args.out, name)
    fresh(base)
    candidates = []
    for k in range(args.selection_searches):
        candidates.append(selection_candidate(args, domains, base, struct_coef, k))
        c = candidates[-1]
        print(
            f"   search seed {c['search_seed']}: valid BLEU {c['valid_bleu_mean']:.2f}", flush=True
        )
    chosen = max(candidates, key=lambda c: c["valid_bleu_mean"])  # the first of equals
    genotype = os.path.join(base, "genotype.json")
    shutil.copyfile(chosen["genotype"], genotype)
    for c in candidates:
        c["genotype"] = display_path(c["genotype"])
    row = {"row": name, "domains": domains, "struct_coef": struct_coef}
    row.update(retrain_and_score(args, domains, genotype, base))
    row.update(
        search_seed=chosen["search_seed"],
        candidates=candidates,
        search_minutes=round(
            sum(c["search_minutes"] + c["selection_minutes"] for c in candidates), 2
        ),
    )
    return row


def random_row(args, k, reference):
    """``mdnas-derive REFERENCE --random-seed K --match-params``, retrained and scored."""
    from mdnas_fairseq import derive

    base = os.path.join(args.out, f"random_{k}")
    fresh(base)
    genotype = os.path.join(base, "genotype.json")
    argv = [reference, "--random-seed", str(k), "--match-params"]
    argv += ["--tolerance", str(args.match_tolerance), "--random-sharing", args.random_sharing]
    argv += ["--out", genotype]
    if derive.main(argv) != 0:
        raise SystemExit(f"mdnas-derive {shlex.join(argv)} failed")
    row = {"row": f"random_{k}", "domains": args.domains, "derive": "mdnas-derive " + shlex.join(
        [display_path(reference), *argv[1:-1], display_path(genotype)])}  # fmt: skip
    row.update(retrain_and_score(args, args.domains, genotype, base), search_minutes=None)
    with open(genotype, encoding="utf-8") as f:
        derived_by = json.load(f)["derived_by"]
    row["target_cell_params"], row["draws"] = derived_by["target_cell_params"], derived_by["draws"]
    return row


def union_row(args):
    """One model per domain, each searched and retrained on its domain alone."""
    parts = []
    for d in args.domains:
        parts.append(searched_row(args, f"single_{d}", [d], 0.0))
        print(f"   single_{d}: BLEU {parts[-1]['bleu'][d]:.2f}", flush=True)
    return {
        "row": "union",
        "domains": args.domains,
        "bleu": {p["domains"][0]: p["bleu"][p["domains"][0]] for p in parts},
        "chrf": {p["domains"][0]: p["chrf"][p["domains"][0]] for p in parts},
        "sentences": {p["domains"][0]: p["sentences"][p["domains"][0]] for p in parts},
        "hypotheses": {p["domains"][0]: p["hypotheses"][p["domains"][0]] for p in parts},
        "signatures": parts[0]["signatures"],
        "params": sum(p["params"] for p in parts),
        "search_minutes": round(sum(p["search_minutes"] for p in parts), 2),
        "train_minutes": round(sum(p["train_minutes"] for p in parts), 2),
        "models": parts,
    }


def concatenated_data_bin(args, out):
    """A fairseq translation data-bin of every domain together: the joined dictionary and
    ``{train,valid}.SRC-TGT.{SRC,TGT}``, the domains' files merged in order by fairseq's
    ``MMapIndexedDatasetBuilder.merge_file_``."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder

    fresh(out)
    src, tgt = args.meta["source_lang"], args.meta["target_lang"]
    for lang in (src, tgt):
        shutil.copyfile(
            os.path.join(args.data, f"dict.{lang}.txt"), os.path.join(out, f"dict.{lang}.txt")
        )
    for split in ("train", "valid"):
        for lang in (src, tgt):
            parts = [
                os.path.join(args.data, f"{split}.{d}.{src}-{tgt}.{lang}") for d in args.domains
            ]
            dtype = MMapIndexedDataset.Index(parts[0] + ".idx").dtype
            prefix = os.path.join(out, f"{split}.{src}-{tgt}.{lang}")
            builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
            for part in parts:
                builder.merge_file_(part)
            builder.finalize(prefix + ".idx")
    return out


def built_params(argv):
    """Parameters of the model ``fairseq-train argv`` would build (nothing trained)."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(options.get_training_parser(), argv[1:])
    )
    task = tasks.setup_task(cfg.task)
    return sum(p.numel() for p in task.build_model(cfg.model).parameters())


def baseline_ffn(args, data, save, target):
    """The FFN width of both the encoder's and the decoder's layers whose transformer has the
    parameter count nearest ``target`` (the count is linear in it: two builds give the line)."""
    low, high = (built_params(baseline_command(args, data, save, f)) for f in (1, 2))
    per_unit = high - low
    ffn = max(1, round(1 + (target - low) / per_unit))
    return ffn, low + (ffn - 1) * per_unit


def baseline_row(args, target):
    base = os.path.join(args.out, "baseline")
    fresh(base)
    data = concatenated_data_bin(args, os.path.join(args.out, "baseline-data"))
    save = os.path.join(base, "train")
    ffn, predicted = baseline_ffn(args, data, save, target)
    cmd = baseline_command(args, data, save, ffn)
    _, seconds = lm.run(cmd, os.path.join(base, "train.log"))
    checkpoint = os.path.join(save, "checkpoint_best.pt")
    row = {"row": "baseline", "arch": "transformer", "domains": args.domains}
    row.update(score_checkpoint(args, checkpoint, args.domains, os.path.join(base, "hyp")))
    row.update(
        train_minutes=minutes(seconds),
        search_minutes=None,
        ffn_embed_dim=ffn,
        params_target=target,
        params_predicted=predicted,
        data=display_path(data),
        checkpoint=display_path(checkpoint),
        command=shlex.join([os.path.basename(cmd[0])] + [display_path(x) for x in cmd[1:]]),
    )
    return row


def model_sizes(checkpoint):
    """Layers, width and heads of a trained mdnas_transformer (its checkpoint's configuration)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = state["cfg"]["model"]
    keys = ("encoder_layers", "decoder_layers", "embed_dim", "attention_heads")
    return {k: int(model[k]) for k in keys}


# ---------------------------------------------------------------------------- table
ORDER = ("baseline", "union", "multi", "multi_struct", "multi_struct_selected")


def format_table(rows, domains):
    head = "| row | " + " | ".join(f"{d} BLEU | {d} chrF" for d in domains)
    lines = [
        head + " | params | search min | train min |",
        "|" + "---|" * (2 * len(domains) + 4),
    ]
    ordered = sorted(rows, key=lambda r: ORDER.index(r["row"]) if r["row"] in ORDER else 9)
    for r in ordered:
        cells = [f"{r['bleu'][d]:.2f} | {r['chrf'][d]:.2f}" for d in domains]
        search = "-" if r.get("search_minutes") is None else f"{r['search_minutes']:.1f}"
        label = r["row"] + (f" (ffn {r['ffn_embed_dim']})" if r["row"] == "baseline" else "")
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {r['params']:,} | {search} | {r['train_minutes']:.1f} |"
        )
    return "\n".join(lines)


def write_results(args, result):
    with open(os.path.join(args.out, "table.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    sig = result.get("signatures", {})
    commands = [f"Command: `{result['command']}`"]
    for part in result.get("parts", ()):
        commands.append(
            f"- rows {', '.join(part['rows'])}: `{part['command']}` (commit {part['commit']}, "
            f"{part['date']})"
        )
    text = "\n".join(
        [
            f"Translation table, {args.arch}, seed {args.seed}, commit {result['commit']}, "
            f"{result['date']}",
            "",
            *commands,
            "",
            f"BLEU and chrF (sacrebleu, detokenised) on split {args.split!r}, beam {args.beam}; "
            f"minutes are fairseq-train wall time.",
            "",
            format_table(result["rows"], args.domains),
            "",
            f"BLEU signature: `{sig.get('bleu')}`",
            f"chrF signature: `{sig.get('chrf')}`",
        ]
    )
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return text


def new_result(argv, seed, settings, domains):
    """A table's record of its making (this script's command line, commit, date) and no rows."""
    return {
        "command": "python scripts/translation_table.py " + shlex.join(argv),
        "commit": git_commit(ROOT),
        "seed": seed,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": settings,
        "domains": domains,
        "rows": [],
    }


# ---------------------------------------------------------------------------- merge
SAME_IN_PARTS = ("rows", "out")  # the settings that may differ between the parts of one table


def merge(out, folders, argv):
    """One table from runs of this script that made different rows of it with the same settings
    (``--rows`` split across processes, e.g. one per core): their rows in the table's order,
    every part's command, commit and date under ``parts``."""
    parts = []
    for folder in folders:
        path = os.path.join(folder, "table.json")
        try:
            with open(path, encoding="utf-8") as f:
                parts.append((display_path(path), json.load(f)))
        except FileNotFoundError:
            raise SystemExit(
                f"--merge {folder}: no table.json (not a translation_table run)"
            ) from None
    first_path, first = parts[0]
    row_keys = {key for keys in ROW_SETTINGS.values() for key in keys} | set(RANDOM_SETTINGS)
    seen, target = {}, None
    for path, part in parts:
        for key in sorted(set(first["settings"]) | set(part["settings"])):
            a, b = first["settings"].get(key), part["settings"].get(key)
            if key not in SAME_IN_PARTS and key not in row_keys and a != b:
                raise SystemExit(
                    f"--merge: setting {key!r} differs: {a!r} in {first_path}, {b!r} in {path}"
                )
        if part.get("signatures") != first.get("signatures"):
            raise SystemExit(f"--merge: sacrebleu signatures differ in {first_path} and {path}")
        for row in part["rows"]:
            if row["row"] in seen:
                raise SystemExit(f"--merge: row {row['row']!r} is in {seen[row['row']]} and {path}")
            seen[row["row"]] = path
            if row["row"].startswith("random_"):  # matched to the same search's cell parameters
                if target and row["target_cell_params"] != target[0]:
                    raise SystemExit(
                        f"--merge: random rows matched to different sizes: {target[1]} "
                        f"{target[0]} cell parameters in {target[2]}, {row['row']} "
                        f"{row['target_cell_params']} in {path}"
                    )
                target = target or (row["target_cell_params"], row["row"], path)

    def order(row):
        kind = "random" if row["row"].startswith("random_") else row["row"]
        return ROWS.index(kind)

    rows = sorted((r for _, p in parts for r in p["rows"]), key=order)  # stable: random_K kept
    settings = {k: v for k, v in first["settings"].items() if k not in row_keys}
    for row, keys in ROW_SETTINGS.items():  # a row's own settings: those of the part that ran it
        if row in seen:
            ran = next(p for path, p in parts if path == seen[row])
            settings.update({k: ran["settings"][k] for k in keys})
    settings.update(out=display_path(out), rows=",".join(r["row"] for r in rows))
    settings["random_seeds"] = ",".join(
        r["row"][7:] for r in rows if r["row"].startswith("random_")
    )
    result = new_result(argv, first["seed"], settings, first["domains"])
    result.update(
        parts=[
            made
            for path, p in parts
            for made in p.get("parts")  # a merged table: the runs that made it
            or [
                {
                    "table": path,
                    "command": p["command"],
                    "commit": p["commit"],
                    "date": p["date"],
                    "rows": [r["row"] for r in p["rows"]],
                }
            ]
        ],
        rows=rows,
        signatures=first.get("signatures", {}),
    )
    os.makedirs(out, exist_ok=True)
    args = Namespace(out=out, arch=settings["arch"], seed=first["seed"], split=settings["split"])
    args.beam, args.domains = settings["beam"], first["domains"]
    print(write_results(args, result))
    return result


# ---------------------------------------------------------------------------- main
class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, the defaults of the flags that have one shown."""

    def _get_help_string(self, action):
        if action.default in (None, "", True, False) or action.required:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    description, _, epilog = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(
        description=description,
        formatter_class=HelpFormatter,
        epilog=epilog
        + "\nreads: --data (mdnas-prepare --translation's data-bin: mdnas_data.json, the joined\n"
        "  dictionary, {split}.{domain}.SRC-TGT.*) and DATA/../raw/ (the references)\n"
        "writes: --out/table.json (command, commit, seed, date, settings, sacrebleu signatures,\n"
        "  per row and domain BLEU, chrF, sentences; params, search and train minutes) and\n"
        "  --out/table.md; per row --out/<row>/ (search/ and retrain/ save dirs, genotype.json,\n"
        "  fairseq logs, hyp/ hypotheses), --out/single_<domain>/ (the union's models),\n"
        "  --out/baseline-data/ (the concatenated data-bin)",
    )
    p.add_argument("--data", help="input: data-bin of mdnas-prepare --translation (required)")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="FOLDER",
        help="instead of running rows: write --out's table from the table.json of these runs "
        "(the same settings, different --rows; e.g. two processes side by side)",
    )
    p.add_argument("--out", required=True, help="output folder (one sub-folder per row)")
    p.add_argument(
        "--rows",
        default=",".join(r for r in ROWS if r != "multi_struct_selected"),
        help="rows to run (always in this order; random and baseline need multi_struct); "
        "multi_struct_selected only when named (it did not pay on the gettext genres, "
        "docs/translation.md)",
    )
    p.add_argument("--arch", default="mdnas_transformer_tiny", help="the searchable model")
    p.add_argument("--search-epochs", type=int, default=2, help="epochs of every search")
    p.add_argument("--retrain-epochs", type=int, default=8, help="epochs of every trained model")
    p.add_argument("--lr", type=float, default=0.002, help="Adam's learning rate (every row)")
    p.add_argument("--clip-norm", type=float, default=0.1, help="gradient clipping (every row)")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch (every row)")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing (every row)")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout (every row)")
    p.add_argument("--struct-coef", type=float, default=0.1, help="the multi_struct row's term")
    p.add_argument(
        "--selection-searches",
        type=int,
        default=3,
        help="multi_struct_selected: struct searches at seeds --seed + 1000 k, k < this",
    )
    p.add_argument(
        "--selection-epochs",
        type=int,
        default=3,
        help="multi_struct_selected: epochs of each candidate's short retrain (seed --seed + "
        "500) whose mean valid BLEU chooses the genotype",
    )
    p.add_argument(
        "--search-flags", default="", help="more fairseq-train flags for the searches only"
    )
    p.add_argument("--random-seeds", default="1,2", help="one random_K row per seed K")
    p.add_argument(
        "--match-tolerance",
        type=float,
        default=MATCH_TOLERANCE,
        help="random rows' cell parameters within this (relative) below multi_struct's",
    )
    p.add_argument(
        "--random-sharing",
        choices=lm.RANDOM_SHARING,
        default="copied",
        help="how the random rows' domains relate (mdnas-derive --random-sharing): copied (nodes "
        "copied between domains at a random rate) can match a search that shares most edges, "
        "which independent cells cannot (the gettext genres' struct search, seed 1)",
    )
    p.add_argument(
        "--random-reference",
        metavar="GENOTYPE",
        help="the search genotype.json the random rows are matched to (default: this run's "
        "multi_struct search); e.g. more random rows for an existing table, then --merge",
    )
    p.add_argument(
        "--baseline-flags", default="", help="more fairseq-train flags for the baseline only"
    )
    p.add_argument("--seed", type=int, default=1, help="seed of every search and training")
    p.add_argument(
        "--eval-bleu",
        action="store_true",
        help="keep the checkpoint with the best valid BLEU (fairseq's --eval-bleu; slower), not "
        "the best valid loss",
    )
    p.add_argument("--split", default="test", help="split scored")
    p.add_argument("--beam", type=int, default=5, help="beam size of the scored translations")
    p.add_argument("--lenpen", type=float, default=1.0, help="length penalty of the beam search")
    p.add_argument(
        "--max-len-a", type=float, default=1.2, help="hypotheses at most a * source length + b"
    )
    p.add_argument(
        "--max-len-b", type=int, default=10, help="hypotheses at most a * source length + b"
    )
    p.add_argument(
        "--score-batch-size", type=int, default=64, help="sentences per batch when scoring"
    )
    p.add_argument("--no-cpu", dest="cpu", action="store_false", help="let fairseq use a GPU")
    p.add_argument("extra", nargs="*", help="more fairseq-train flags for the mdnas rows, after --")
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.merge:
        return merge(os.path.abspath(args.out), args.merge, argv)
    if not args.data:
        raise SystemExit("--data is required (or --merge)")
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ROWS]
    rows_wanted = [r for r in ROWS if r in wanted]  # multi_struct first: it sizes two others
    if unknown:
        raise SystemExit(f"--rows {unknown}: not rows of this table ({', '.join(ROWS)})")
    if "baseline" in rows_wanted and "multi_struct" not in rows_wanted:
        raise SystemExit("--rows baseline is sized from multi_struct: add it")
    if "random" in rows_wanted and "multi_struct" not in rows_wanted and not args.random_reference:
        raise SystemExit("--rows random is sized from multi_struct: add it or --random-reference")
    args.data, args.out = os.path.abspath(args.data), os.path.abspath(args.out)
    if args.random_reference:
        args.random_reference = os.path.abspath(args.random_reference)
        if not os.path.isfile(args.random_reference):
            raise SystemExit(f"--random-reference {args.random_reference}: no such genotype file")
    import mdnas_fairseq  # noqa: F401  (registers the task and the model)
    from mdnas_fairseq.tasks.multidomain_nas_translation import translation_metadata

    try:
        args.meta = translation_metadata(args.data)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"--data: {e}") from None
    args.domains = list(args.meta["domains"])
    os.makedirs(args.out, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "meta"}
    settings.update(data=display_path(args.data), out=display_path(args.out))
    settings.update(random_reference=display_path(args.random_reference))
    result = new_result(argv, args.seed, settings, args.domains)

    def add(row):
        result["rows"].append(row)
        result["signatures"] = row["signatures"]
        bleu = ", ".join(f"{d} {row['bleu'][d]:.2f}" for d in row["bleu"])
        print(f"   {row['row']}: BLEU {bleu}; params {row['params']:,}", flush=True)
        write_results(args, result)  # after every row: a long run shows its progress

    struct = None
    for name in rows_wanted:
        print(f"== {name}", flush=True)
        if name == "multi_struct_selected":
            add(selected_row(args, name, args.domains, args.struct_coef))
        elif name in ("multi_struct", "multi"):
            coef = args.struct_coef if name == "multi_struct" else 0.0
            row = searched_row(args, name, args.domains, coef)
            if name == "multi_struct":
                struct = row
                args.model_sizes = model_sizes(
                    os.path.join(args.out, name, "retrain", "checkpoint_best.pt")
                )
            add(row)
        elif name == "random":
            reference = args.random_reference or os.path.join(
                args.out, "multi_struct", "search", "genotype.json"
            )
            for k in [int(x) for x in args.random_seeds.split(",") if x.strip()]:
                add(random_row(args, k, reference))
        elif name == "union":
            add(union_row(args))
        else:
            add(baseline_row(args, struct["params"]))
    print(write_results(args, result))
    return result


if __name__ == "__main__":
    main()
