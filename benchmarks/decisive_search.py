#!/usr/bin/env python
"""How decided does the search get within the demo's and the tables' budgets?

Runs the same search under several alpha-step settings and reports, per setting, the final mean
entropy of softmax(alpha) over edges (uniform: log K) and the mean margin between the best and
second-best non-``none`` operation per edge (0: undecided), averaged over the architectures, with
the wall time. The language-model budget is the demo's (embedded En/De corpus, mdnas_rnn_tiny,
3 search epochs, batch 64), the vision budget the table's (D = 2, 128 images per domain, 8 channels).

    OMP_NUM_THREADS=1 python benchmarks/decisive_search.py --task lm --out build/decisive_lm
    OMP_NUM_THREADS=1 python benchmarks/decisive_search.py --task vision --mnist-root ../shared/data/mnist \\
        --out build/decisive_vision

Writes OUT/decisiveness.md and .json (settings, per-epoch values, the command and the commit).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from mdnas_fairseq.provenance import display_path, git_commit
from mdnas_fairseq.search import edge_entropy, edge_margin, genotype_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)

LM_GRID = {  # name -> search flags (demo: 76 updates per epoch, 228 in 3 epochs)
    "alpha lr 3e-3 (the former default)": ["--alpha-lr", "3e-3"],
    "alpha lr 0.03": ["--alpha-lr", "0.03"],
    "alpha lr 0.1 (the default)": [],
    "alpha lr 0.3": ["--alpha-lr", "0.3"],
    "alpha lr 0.1, warm-up 1 epoch": ["--alpha-start-update", "76"],
    "alpha lr 0.1, temperature 1 -> 0.2": ["--temperature-end", "0.2", "--max-update", "228"],
    "alpha lr 0.1, Adam betas 0.9,0.99": ["--alpha-betas", "0.9,0.99"],
    "alpha lr 0.1, no alpha weight decay": ["--alpha-weight-decay", "0"],
    "alpha lr 0.3, no alpha weight decay": ["--alpha-lr", "0.3", "--alpha-weight-decay", "0"],
}
VISION_GRID = {  # name -> (search epochs, flags); D = 2: 8 updates per epoch
    "table (5 epochs, alpha lr 0.03)": (5, []),
    "5 epochs, alpha lr 0.3": (5, ["--alpha-lr", "0.3"]),
    "20 epochs, alpha lr 0.03": (20, []),
    "20 epochs, alpha lr 0.1": (20, ["--alpha-lr", "0.1"]),
    "20 epochs, alpha lr 0.1, warm-up 5 epochs": (
        20,
        ["--alpha-lr", "0.1", "--alpha-start-update", "40"],
    ),
}


def run(cmd, log):
    with open(log, "w") as f:
        proc = subprocess.run(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")),
        )
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)} (log {log})")


def decisiveness(genotype_json):
    """(entropy, margin) averaged over architectures, per epoch of alpha_history.jsonl."""
    with open(genotype_json) as f:
        space = genotype_from_dict(json.load(f)).space
    history = os.path.join(os.path.dirname(genotype_json), "alpha_history.jsonl")
    per_epoch = []
    with open(history) as f:
        for line in f:
            record = json.loads(line)
            probs = torch.tensor(list(record["alpha"].values()), dtype=torch.float64)
            per_epoch.append(
                {
                    "epoch": record["epoch"],
                    "entropy": float(edge_entropy(probs).mean()),
                    "margin": float(edge_margin(probs, space).mean()),
                }
            )
    return per_epoch


def lm_command(args, save, flags):
    data = os.path.join(args.out, "data", "data-bin")
    if not os.path.isdir(data):
        subprocess.run(
            [
                sys.executable,
                "scripts/prepare_parallel.py",
                "--tsv",
                "examples/data/en_de_small.tsv",
                "--langs",
                "en,de",
                "--out",
                os.path.join(args.out, "data"),
                "--vocab-size",
                "3000",
                "--max-rows",
                "3000",
                "--seed",
                "1",
                "--force",
                "--quiet",
            ],
            check=True,
            cwd=ROOT,
        )
    return [
        os.path.join(BIN, "fairseq-train"),
        data,
        "--user-dir",
        "mdnas_fairseq",
        "--task",
        "multidomain_nas",
        "--domains",
        "en,de",
        "--arch",
        "mdnas_rnn_tiny",
        "--criterion",
        "multidomain_nas_loss",
        "--struct-coef",
        "0.1",
        "--optimizer",
        "adam",
        "--lr",
        "0.003",
        "--clip-norm",
        "0.25",
        "--batch-size",
        "64",
        "--max-epoch",
        "3",
        "--seed",
        str(args.seed),
        "--cpu",
        "--num-workers",
        "0",
        "--save-dir",
        save,
        "--no-save",
        "--no-alpha-heatmaps",
        "--log-format",
        "simple",
    ] + flags


def vision_command(args, save, epochs, flags):
    cmd = [
        os.path.join(BIN, "fairseq-train"),
        "--user-dir",
        "mdnas_fairseq",
        "--task",
        "rotated_mnist_nas",
        "--rotations",
        "0,90",
        "--train-images-per-domain",
        "128",
        "--heldout-images-per-domain",
        "128",
        "--arch",
        "mdnas_conv",
        "--channels",
        "8",
        "--num-nodes",
        "4",
        "--criterion",
        "multidomain_nas_loss",
        "--struct-coef",
        "5",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--weight-decay",
        "0.0005",
        "--batch-size",
        "32",
        "--max-epoch",
        str(epochs),
        "--alpha-lr",
        "0.03",
        "--augment-shift",
        "2",
        "--seed",
        str(args.seed),
        "--cpu",
        "--num-workers",
        "0",
        "--save-dir",
        save,
        "--no-save",
        "--no-alpha-heatmaps",
        "--log-format",
        "simple",
        "--batch-size-valid",
        "1000",
    ]
    return cmd + (["--mnist-root", args.mnist_root] if args.mnist_root else []) + flags


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("lm", "vision"), required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--mnist-root", default="")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--settings", default="", help="comma-separated indices of the grid to run (default: all)"
    )
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    grid = LM_GRID if args.task == "lm" else VISION_GRID
    rows = []
    chosen = {int(k) for k in args.settings.split(",") if k.strip()} or set(range(len(grid)))
    for k, (name, setting) in enumerate(grid.items()):
        if k not in chosen:
            continue
        save = os.path.join(args.out, f"run{k}")
        cmd = (
            lm_command(args, save, setting)
            if args.task == "lm"
            else vision_command(args, save, *setting)
        )
        start = time.time()
        run(cmd, os.path.join(args.out, f"run{k}.log"))
        per_epoch = decisiveness(os.path.join(save, "genotype.json"))
        rows.append(
            {
                "setting": name,
                "flags": cmd[cmd.index("--log-format") + 2 :],
                "seconds": time.time() - start,
                "per_epoch": per_epoch,
                **{key: per_epoch[-1][key] for key in ("entropy", "margin")},
            }
        )
        print(
            f"{name:45s} entropy {rows[-1]['entropy']:.4f} margin {rows[-1]['margin']:.4f} "
            f"({rows[-1]['seconds']:.0f}s)",
            flush=True,
        )
    command = f"python benchmarks/decisive_search.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    result = {
        "command": command,
        "commit": git_commit(ROOT),
        "seed": args.seed,
        "out": display_path(args.out),
        "rows": rows,
    }
    with open(os.path.join(args.out, "decisiveness.json"), "w") as f:
        json.dump(result, f, indent=1)
    k_ops = "log 5 = 1.609" if args.task == "lm" else "log 8 = 2.079"
    lines = [
        f"# How decided the search gets ({args.task})",
        "",
        f"`{command}` (seed {args.seed}, commit {result['commit']}). Entropy: mean over edges and "
        f"architectures of the entropy of softmax(alpha) (uniform: {k_ops}); margin: mean best minus "
        "second-best non-none probability per edge.",
        "",
        "| setting | entropy | margin | per epoch (margin) | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        trail = ", ".join(f"{e['margin']:.3f}" for e in r["per_epoch"])
        lines.append(
            f"| {r['setting']} | {r['entropy']:.4f} | {r['margin']:.4f} | {trail} | {r['seconds']:.0f} |"
        )
    with open(os.path.join(args.out, "decisiveness.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
