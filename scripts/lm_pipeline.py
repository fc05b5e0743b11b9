#!/usr/bin/env python
"""Search, derive, retrain and evaluate multi-domain language models with fairseq's own commands.

For every requested model it runs

1. ``fairseq-train --task multidomain_nas`` without ``--genotype`` (the architecture search; it
   writes ``genotype.json`` in its save dir),
2. ``fairseq-train ... --genotype <search>/genotype.json`` (retrain the derived model from scratch),
3. ``fairseq-eval-lm ... --gen-subset test --eval-domain D`` for every domain of the model,

then prints (and writes ``table.md`` / ``table.json``) the test perplexity per domain and the
parameter count of the retrained model, like the seed's LM table (docs/method.md, section 5).

Models (``--models``):
    single_<lang>  one domain, its own search (e.g. single_en)
    union          all domains, ONE shared architecture (--shared-architecture), domains mixed
    multi          all domains, one architecture per domain, no regularizer
    multi_struct   ... with the structural (JS) regularizer (--struct-coef)
    multi_contr    ... with the contrastive (triplet) regularizer (--contrastive-coef)

Example (the demo): ``python scripts/lm_pipeline.py --data build/demo-data/data-bin --out build/demo-run``
"""
import argparse
import json
import os
import re
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


def run(cmd, log_path):
    """Run a command, logging to a file; on failure show the log's tail and stop."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    start = time.time()
    # The recurrent cell runs many small operations: extra OpenMP threads only spin (and slow
    # everything down badly when several processes share the cores), so one thread by default.
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
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


def model_settings(name, domains, args):
    """(domains of the model, extra fairseq-train flags) of a model name."""
    if name.startswith("single_"):
        lang = name[len("single_"):]
        if lang not in domains:
            raise SystemExit(f"model {name}: {lang!r} is not one of the data's domains {domains}")
        return [lang], []
    if name == "union":
        return domains, ["--shared-architecture"]
    if name == "multi":
        return domains, []
    if name == "multi_struct":
        return domains, ["--struct-coef", str(args.struct_coef)]
    if name == "multi_contr":
        return domains, ["--contrastive-coef", str(args.contrastive_coef)]
    raise SystemExit(f"unknown model {name!r}: use single_<lang>, union, multi, multi_struct, multi_contr")


def train_flags(args, domains, save_dir, epochs):
    flags = [
        args.data, "--user-dir", USER_DIR, "--task", "multidomain_nas", "--domains", ",".join(domains),
        "--arch", args.arch, "--criterion", "multidomain_nas_loss", "--sample-break-mode", "eos",
        "--optimizer", "adam", "--lr", str(args.lr), "--clip-norm", str(args.clip_norm),
        "--batch-size", str(args.batch_size), "--max-epoch", str(epochs), "--seed", str(args.seed),
        "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "50",
        "--num-workers", "0",
    ]
    if args.cpu:
        flags.append("--cpu")
    return flags + args.extra


def count_parameters(checkpoint):
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    return sum(v.numel() for k, v in state.items() if not k.endswith("dictionary_fingerprint"))


def evaluate(args, checkpoint, domain, log_path):
    cmd = [fairseq_cmd("fairseq-eval-lm"), args.data, "--user-dir", USER_DIR, "--task", "multidomain_nas",
           "--path", checkpoint, "--gen-subset", "test", "--eval-domain", domain, "--sample-break-mode", "eos",
           "--batch-size", str(args.batch_size), "--num-workers", "0"]
    if args.cpu:
        cmd.append("--cpu")
    text, _ = run(cmd, log_path)
    found = PERPLEXITY.findall(text)
    if not found:
        raise SystemExit(f"no perplexity in {log_path}")
    return float(found[-1][1])


def run_model(name, domains_all, args):
    domains, extra = model_settings(name, domains_all, args)
    base = os.path.join(args.out, name)
    if os.path.isdir(base):  # fairseq-train would resume from an old checkpoint_last.pt
        shutil.rmtree(base)
    search_dir, retrain_dir = os.path.join(base, "search"), os.path.join(base, "retrain")
    train = fairseq_cmd("fairseq-train")
    _, t_search = run([train] + train_flags(args, domains, search_dir, args.search_epochs)
                      + ["--alpha-order", str(args.alpha_order), "--alpha-lr", str(args.alpha_lr)] + extra,
                      os.path.join(base, "search.log"))
    genotype = os.path.join(search_dir, "genotype.json")
    with open(genotype, encoding="utf-8") as f:
        g = json.load(f)
    shared = ["--shared-architecture"] if "--shared-architecture" in extra else []
    _, t_retrain = run([train] + train_flags(args, domains, retrain_dir, args.retrain_epochs)
                       + ["--genotype", genotype] + shared, os.path.join(base, "retrain.log"))
    checkpoint = os.path.join(retrain_dir, "checkpoint_best.pt")
    ppl = {d: evaluate(args, checkpoint, d, os.path.join(base, f"eval_{d}.log")) for d in domains}
    search_ppl = {d: evaluate(args, os.path.join(search_dir, "checkpoint_best.pt"), d,
                              os.path.join(base, f"eval_search_{d}.log")) for d in domains}
    return {
        "model": name,
        "domains": domains,
        "test_ppl": ppl,
        "search_model_test_ppl": search_ppl,
        "params": count_parameters(checkpoint),
        "params_from_genotype": g["param_counts"]["multimodel"],
        "agreement_edges": _agreement(g),
        "search_seconds": round(t_search, 1),
        "retrain_seconds": round(t_retrain, 1),
        "genotype": display_path(genotype),
    }


def _agreement(g):
    """Share of the union's edges on which every domain chose the same operation."""
    from mdnas_fairseq.search import genotype_from_dict

    return genotype_from_dict(g).agreement()


def format_table(rows, domains):
    head = "| model | " + " | ".join(f"{d} ppl" for d in domains) + " | params | edges agreed |"
    lines = [head, "|" + "---|" * (len(domains) + 3)]
    for r in rows:
        cells = [f"{r['test_ppl'][d]:.2f}" if d in r["test_ppl"] else "-" for d in domains]
        agreed = f"{100 * r['agreement_edges']:.0f}%" if len(r["domains"]) > 1 and r["model"] != "union" else "-"
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r['params']:,} | {agreed} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data-bin made by scripts/prepare_parallel.py")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per model)")
    p.add_argument("--models", default="single_en,union,multi_struct")
    p.add_argument("--arch", default="mdnas_rnn_tiny")
    p.add_argument("--search-epochs", type=int, default=3)
    p.add_argument("--retrain-epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--clip-norm", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--alpha-order", type=int, default=1)
    p.add_argument("--alpha-lr", type=float, default=0.003)
    p.add_argument("--struct-coef", type=float, default=0.1)
    p.add_argument("--contrastive-coef", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-cpu", dest="cpu", action="store_false", help="let fairseq use a GPU")
    p.add_argument("extra", nargs="*", help="more fairseq-train flags, after --")
    args = p.parse_args(argv)
    meta_path = os.path.join(args.data, "mdnas_data.json")
    if not os.path.isfile(meta_path):
        raise SystemExit(f"{meta_path} not found: make the data with scripts/prepare_parallel.py")
    with open(meta_path, encoding="utf-8") as f:
        domains = json.load(f)["langs"]
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(f"== {name}: search {args.search_epochs} epochs, retrain {args.retrain_epochs} epochs", flush=True)
        row = run_model(name, domains, args)
        print(f"   test ppl {row['test_ppl']}, params {row['params']:,} "
              f"(search {row['search_seconds']}s, retrain {row['retrain_seconds']}s)", flush=True)
        rows.append(row)
    table = format_table(rows, domains)
    settings = {k: v for k, v in vars(args).items()}
    settings.update({k: display_path(settings[k]) for k in ("data", "out")})
    commit = git_commit(ROOT)
    with open(os.path.join(args.out, "table.json"), "w", encoding="utf-8") as f:
        json.dump({"settings": settings, "commit": commit, "rows": rows}, f, indent=1)
    command = "python scripts/lm_pipeline.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
        f.write(f"Test perplexity per domain (retrained derived models), seed {args.seed}, commit {commit}\n\n"
                f"Command: `{command}`\n\n{table}\n")
    print("\nTest perplexity per domain of the retrained models (seed %d, %s):\n" % (args.seed, args.arch))
    print(table)
    return rows


if __name__ == "__main__":
    main()
