#!/usr/bin/env python
"""What extending a multimodel to new languages costs and buys (issue 24, item 6; docs/extend.md).

From one TSV, base languages and new languages it

1. prepares the base data (``prepare()``, as ``mdnas-prepare``), the extended data
   (``extend()``, as ``mdnas-prepare --extend-data``): one data-bin holding every language, the
   base dictionary with the new languages' entries appended;
2. base: a multi_struct search + retrain on the base languages (scripts/lm_pipeline.py's protocol);
3. extended: the extension search (``--extend-from`` the base search's checkpoint_last.pt) and the
   extension retrain (``--extend-from`` the base multimodel's checkpoint_best.pt), timed separately;
   the old languages' test perplexities must equal the base model's (checked, recorded);
4. joint: a multi_struct search + retrain on every language from scratch, on the extended data-bin;
5. union: single_<lang> models (lm_pipeline's) for every language, on the extended data-bin;
6. for each new language, a single-language model about the size the extension added: the
   single_<lang> genotype of 5, retrained on the EXTENDED data-bin (the extension's tokens) at the
   width (``--size-flags``, all set to one value of ``--single-widths``) whose built model's
   parameter count is nearest to the parameters added (the count and the target are recorded).

Writes ``--out/table.json`` and ``--out/table.md``. Every row is evaluated on the same tokens (one
dictionary, one encoding per language: the base data-bin's files are byte-identical in the
extended one), so per-token perplexities compare across rows. A joint run in practice might train
one sentencepiece model on every language; that changes the tokens and is not what is compared
here. fairseq-eval-lm prints a per-token perplexity only (no per-word one without
``--remove-bpe``, which this script does not use).

Example: ``python scripts/extend_table.py --out build/extend-table --seed 1 --arch mdnas_rnn_small``
"""

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]  # a checkout; scripts/lm_pipeline.py, whose functions run each step

import lm_pipeline as lm  # noqa: E402

from mdnas_fairseq.provenance import display_path, git_commit  # noqa: E402

TOKENS = re.compile(r"Evaluated ([0-9,]+) tokens")


def build_parser():
    p = lm.build_parser()
    p.description = __doc__.split("\n")[0]
    p.epilog = (
        "reads: --tsv, one column per language of --base and --new\n"
        "writes: --out/table.json and --out/table.md (every row's test perplexity per language,\n"
        "  parameters, search and retrain seconds, command, commit, seed, date), and the runs under\n"
        "  --out/data, base, extended, joint, singles and single_new"
    )
    for action in p._actions:
        if action.dest == "data":  # made here
            action.required = False
            action.help = argparse.SUPPRESS
        if action.dest == "models":
            action.help = argparse.SUPPRESS
    p.add_argument(
        "--tsv",
        default=os.path.join("..", "shared", "data", "parallel", "handbook.tsv"),
        help="input: the parallel TSV (header = language codes; default: %(default)s, the "
        "project's shared data beside the repository)",
    )
    p.add_argument("--base", default="en,de,fr", help="languages of the base multimodel")
    p.add_argument("--new", default="es,it", help="languages the extension adds")
    p.add_argument("--vocab-size", type=int, default=None, help="sentencepiece vocabulary size")
    p.add_argument("--max-rows", type=int, default=None, help="use the TSV's first rows only")
    p.add_argument(
        "--single-widths",
        default="8,16,24,32,48,64,96,128,160,192,256,320,384,512,640,768,1024",
        help="widths tried for the size-matched single models of the new languages",
    )
    p.add_argument(
        "--size-flags",
        default=None,
        help="fairseq flags all set to the width (default: --embed-dim,--hidden-dim for "
        "mdnas_rnn*, --decoder-embed-dim for the Transformer space)",
    )
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    args.search_seed_list = [args.seed]  # one seed per table
    args.base_langs = [x.strip() for x in args.base.split(",") if x.strip()]
    args.new_langs = [x.strip() for x in args.new.split(",") if x.strip()]
    if args.size_flags is None:
        rnn = args.arch.startswith("mdnas_rnn")
        args.size_flags = "--embed-dim,--hidden-dim" if rnn else "--decoder-embed-dim"
    return args


def prepare_data(args, data_dir):
    from mdnas_fairseq.data.prepare import extend, prepare

    common = {"seed": args.seed, "workers": 1, "quiet": True, "force": True}
    sizes = {} if args.vocab_size is None else {"vocab_size": args.vocab_size}
    rows = {} if args.max_rows is None else {"max_rows": args.max_rows}
    out = {k: os.path.join(data_dir, k) for k in ("base", "extended")}
    prepare(args.tsv, ",".join(args.base_langs), out["base"], **sizes, **rows, **common)
    base_bin = os.path.join(out["base"], "data-bin")
    extend(base_bin, args.tsv, ",".join(args.new_langs), out["extended"], **common)
    return {k: os.path.join(v, "data-bin") for k, v in out.items()}


def with_data(args, data, out):
    a = argparse.Namespace(**vars(args))
    a.data, a.out = data, out
    return a


def test_tokens(model_dir, tag, domains):
    """Tokens of each domain's test set, as fairseq-eval-lm counted them."""
    tokens = {}
    for d in domains:
        with open(os.path.join(model_dir, f"eval_{tag}_{d}.log"), encoding="utf-8") as f:
            found = TOKENS.findall(f.read())
        tokens[d] = int(found[-1].replace(",", "")) if found else None
    return tokens


def searched_row(args, data, out, name, domains, label):
    a = with_data(args, data, out)
    row = lm.run_model(name, domains, a)
    row["row"], row["data"] = label, display_path(data)
    row["test_tokens"] = test_tokens(os.path.join(out, name), "retrain", row["domains"])
    return row


def fresh(folder):
    """An empty folder (fairseq-train would resume from an old checkpoint_last.pt)."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)


def extension_row(args, data, base_dir, domains):
    """The extension search and retrain (``--extend-from``), each timed."""
    a = with_data(args, data, os.path.join(args.out, "extended"))
    model_dir = os.path.join(a.out, "multi_struct")
    fresh(model_dir)
    _, extra = lm.model_settings("multi_struct", domains, a)
    old_search = os.path.join(base_dir, "search", "checkpoint_last.pt")
    old_retrain = os.path.join(base_dir, "retrain", "checkpoint_best.pt")
    genotype, t_search = lm.search(
        a, domains, extra + ["--extend-from", old_search], model_dir, a.seed
    )
    result = lm.retrain_and_test(a, domains, genotype, model_dir, ["--extend-from", old_retrain])
    return {
        "row": "extended",
        "model": "multi_struct (extended)",
        "domains": domains,
        "data": display_path(data),
        "test_ppl": result["test_ppl"],
        "test_tokens": test_tokens(model_dir, "retrain", domains),
        "params": result["params"],
        "search_seconds": t_search,
        "retrain_seconds": result["seconds"],
        "extended_from": [display_path(old_search), display_path(old_retrain)],
        "genotype": display_path(genotype),
    }


def built_params(args, domains, genotype, extra):
    """Parameters of the model ``fairseq-train`` would build (nothing trained)."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = lm.train_flags(args, domains, os.path.join(args.out, "unused"), 1)
    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(parser, argv + ["--genotype", genotype] + extra)
    )
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return sum(p.numel() for p in model.parameters())


def sized_single_row(args, data, lang, genotype, target):
    """A single-language model of ``lang`` whose width makes its parameter count nearest ``target``
    (widths tried in increasing order until one exceeds it)."""
    a = with_data(args, data, os.path.join(args.out, "single_new"))
    tried = []
    for width in [int(w) for w in args.single_widths.split(",") if w.strip()]:
        flags = [x for f in args.size_flags.split(",") for x in (f.strip(), str(width))]
        tried.append({"width": width, "params": built_params(a, [lang], genotype, flags)})
        if tried[-1]["params"] >= target:
            break
    best = min(tried, key=lambda t: abs(t["params"] - target))
    flags = [x for f in args.size_flags.split(",") for x in (f.strip(), str(best["width"]))]
    model_dir = os.path.join(a.out, f"single_{lang}")
    fresh(model_dir)
    a.extra = list(args.extra) + flags
    result = lm.retrain_and_test(a, [lang], genotype, model_dir, [])
    return {
        "row": f"single_{lang}_sized",
        "model": f"single_{lang} (width {best['width']})",
        "domains": [lang],
        "data": display_path(data),
        "test_ppl": result["test_ppl"],
        "test_tokens": test_tokens(model_dir, "retrain", [lang]),
        "params": result["params"],
        "params_target": target,
        "widths_tried": tried,
        "size_flags": flags,
        "genotype": display_path(genotype),
        "retrain_seconds": result["seconds"],
    }


def fmt(row, langs):
    cells = [f"{row['test_ppl'][d]:.2f}" if d in row["test_ppl"] else "-" for d in langs]
    search = row.get("search_seconds")
    search = "-" if search is None else f"{search:.0f}"
    return (
        f"| {row['row']} | {row['data']} | "
        + " | ".join(cells)
        + f" | {row['params']:,} | {search} | {row['retrain_seconds']:.0f} |"
    )


def write_table(args, argv, result):
    langs = args.base_langs + args.new_langs
    rows = result["rows"]
    by = {r["row"]: r for r in rows}
    ext, joint, base = by["extended"], by["joint"], by["base"]
    head = "| row | data-bin | " + " | ".join(f"{d} ppl" for d in langs)
    lines = [
        f"Extension table, {args.arch}, seed {args.seed}, commit {result['commit']}, {result['date']}",
        "",
        f"Command: `{result['command']}`",
        "",
        head + " | params | search s | retrain s |",
        "|" + "---|" * (len(langs) + 5),
    ] + [fmt(r, langs) for r in rows]
    loses = [
        f"{d} {ext['test_ppl'][d]:.2f} vs {joint['test_ppl'][d]:.2f} "
        f"({100 * (ext['test_ppl'][d] / joint['test_ppl'][d] - 1):+.1f}%)"
        for d in langs
        if ext["test_ppl"][d] > joint["test_ppl"][d]
    ]
    ext_s = ext["search_seconds"] + ext["retrain_seconds"]
    joint_s = joint["search_seconds"] + joint["retrain_seconds"]
    lines += [
        "",
        f"Parameters added by the extension: {result['params_added']:,} "
        f"(extended {ext['params']:,} - base {base['params']:,}).",
        f"Old languages' perplexities equal the base model's exactly: {result['old_equal']}.",
        "Extension loses to the joint run on: "
        + ("; ".join(loses) if loses else "no language")
        + " (every row on the same tokens: the extended data-bin's dictionary and encodings).",
        f"Time: extension {ext_s:.0f}s (search {ext['search_seconds']:.0f}s + retrain "
        f"{ext['retrain_seconds']:.0f}s) against joint {joint_s:.0f}s: saves {joint_s - ext_s:.0f}s "
        "(the base run is reused, not counted).",
        "Perplexities are per token (fairseq-eval-lm); no per-word perplexity is reported.",
        "single_<new>_sized: the single_<lang> genotype retrained on the extended data-bin at the "
        "width (of --single-widths) whose parameter count is nearest the parameters added.",
    ]
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    langs = args.base_langs + args.new_langs
    print("== data", flush=True)
    data = prepare_data(args, os.path.join(args.out, "data"))
    print("== base", flush=True)
    base = searched_row(
        args, data["base"], os.path.join(args.out, "base"), "multi_struct", args.base_langs, "base"
    )
    print("== extended", flush=True)
    base_dir = os.path.join(args.out, "base", "multi_struct")
    ext = extension_row(args, data["extended"], base_dir, langs)
    old_equal = all(ext["test_ppl"][d] == base["test_ppl"][d] for d in args.base_langs)
    print("== joint", flush=True)
    joint_out = os.path.join(args.out, "joint")
    joint = searched_row(args, data["extended"], joint_out, "multi_struct", langs, "joint")
    print("== single models", flush=True)
    singles_out = os.path.join(args.out, "singles")
    singles = {
        d: searched_row(args, data["extended"], singles_out, f"single_{d}", langs, f"single_{d}")
        for d in langs
    }
    union = {
        "row": "union",
        "model": "union of single_<lang>",
        "domains": langs,
        "data": display_path(data["extended"]),
        "test_ppl": {d: singles[d]["test_ppl"][d] for d in langs},
        "test_tokens": {d: singles[d]["test_tokens"][d] for d in langs},
        "params": sum(s["params"] for s in singles.values()),
        "search_seconds": round(sum(s["search_seconds"] for s in singles.values()), 1),
        "retrain_seconds": round(sum(s["retrain_seconds"] for s in singles.values()), 1),
    }
    params_added = ext["params"] - base["params"]
    ext["params_added"] = params_added
    print("== size-matched single models", flush=True)
    sized = [
        sized_single_row(
            args,
            data["extended"],
            d,
            os.path.join(singles_out, f"single_{d}", "genotype.json"),
            params_added,
        )
        for d in args.new_langs
    ]
    settings = {k: v for k, v in vars(args).items() if k != "data"}
    settings["out"] = display_path(args.out)
    result = {
        "command": "python scripts/extend_table.py " + shlex.join(argv),
        "commit": git_commit(ROOT),
        "seed": args.seed,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": settings,
        "data": {k: display_path(v) for k, v in data.items()},
        "params_added": params_added,
        "old_equal": old_equal,
        "rows": [base, ext, joint, union] + list(singles.values()) + sized,
    }
    with open(os.path.join(args.out, "table.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(write_table(args, argv, result))
    if not old_equal:
        print("WARNING: the old languages' perplexities changed with the extension", flush=True)
    return result


if __name__ == "__main__":
    main()
