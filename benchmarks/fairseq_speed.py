"""End-to-end fairseq-train words/s: the search and the derived multimodel (task multidomain_nas)
against --arch lstm_lm.

Used by ``lm_search_speed.py --fairseq-train``. Data: the demo's (scripts/demo.sh: the first 3,000
rows of the embedded En/De corpus, a 3,000-entry shared sentencepiece vocabulary), prepared once
with scripts/prepare_parallel.py; lstm_lm reads the same English training split (``--train-subset
train.en``) with task language_modeling. Rows: the first-order search in each weight layout
(``--search-weights``) with the cell eager (what CPU runs use) and, where asked, compiled; the
derived multimodel of a random genotype (seed 3, as the in-process rows; ``--genotype``). Same batch
size, embedding and hidden size, Adam, one thread. words/s: the words of the log intervals after the
first (which holds the compilation, if any) over their time, each interval's time being its words
over fairseq's own ``wps`` meter (``train_wall`` is logged in whole seconds: too coarse for a short
interval); wall clock, so the machine's load weighs on it.
"""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, "-m", "fairseq_cli.train"]  # fairseq-train of this interpreter


def prepare(out_dir, vocab_size=3000, max_rows=3000):
    """The demo's data (scripts/demo.sh's prepare_parallel.py flags)."""
    data = os.path.join(out_dir, "data-bin")
    if not os.path.exists(os.path.join(data, "dict.txt")):
        sys.path.insert(0, os.path.join(ROOT, "scripts"))
        from prepare_parallel import prepare as prepare_parallel

        prepare_parallel(
            os.path.join(ROOT, "examples", "data", "en_de_small.tsv"),
            "en,de",
            out_dir,
            vocab_size=vocab_size,
            max_rows=max_rows,
            seed=1,
            quiet=True,
        )
    return data


def run_train(cmd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed:\n{proc.stderr[-3000:]}")
    intervals = []  # (words, seconds) of each train_inner record (epoch records say train_wps)
    last_update = 0
    for line in (proc.stdout + proc.stderr).splitlines():
        brace = line.find("{")
        if brace < 0 or '"wps"' not in line:
            continue
        record = json.loads(line[brace:])
        updates = int(record["num_updates"]) - last_update
        last_update = int(record["num_updates"])
        words = float(record["wpb"]) * updates
        intervals.append((words, words / float(record["wps"])))
    if len(intervals) < 3:
        raise RuntimeError(f"too few log intervals to time ({len(intervals)}): raise --e2e-updates")
    words, seconds = (sum(v) for v in zip(*intervals[1:]))
    return words / seconds, wall


def common(H, updates, batch, device="cpu"):
    return (["--cpu"] if device == "cpu" else []) + [
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--batch-size",
        str(batch),
        "--seed",
        "1",
        "--max-update",
        str(updates),
        "--log-format",
        "json",
        "--log-interval",
        str(max(updates // 6, 1)),
        "--no-save",
        "--disable-validation",
        "--num-workers",
        "0",
        "--sample-break-mode",
        "eos",
    ]


def nas_command(data, H, args, extra):
    return (
        [
            *TRAIN,
            data,
            "--user-dir",
            os.path.join(ROOT, "mdnas_fairseq"),
            "--task",
            "multidomain_nas",
            "--domains",
            "en,de",
            "--arch",
            "mdnas_rnn_tiny",
            "--embed-dim",
            str(H),
            "--hidden-dim",
            str(H),
            "--num-nodes",
            str(args.nodes),
            "--criterion",
            "multidomain_nas_loss",
            "--no-alpha-heatmaps",
        ]
        + extra
        + common(H, args.e2e_updates, args.batch, args.device)
    )


def end_to_end(args, hiddens, genotype_path):
    """fairseq-train words/s per hidden size; returns the printed lines and {(H, row): words/s}.
    ``genotype_path(H)``: the derived rows' genotype file."""
    data = prepare(os.path.join(ROOT, args.e2e_dir))
    lines = [
        f"fairseq-train words/s (log intervals after the first), {args.e2e_updates} updates, "
        f"batch {args.batch} sentences, the demo's En/De data, "
        + ("1 thread" if args.device == "cpu" else f"device {args.device}")
    ]
    lines.append(f"{'run':<40}{'words/s':>10}{'vs lstm_lm':>12}{'wall s':>9}")
    rates = {}
    for H in hiddens:
        runs = {}
        lstm = [
            *TRAIN,
            data,
            "--task",
            "language_modeling",
            "--train-subset",
            "train.en",
            "--arch",
            "lstm_lm",
            "--decoder-embed-dim",
            str(H),
            "--decoder-hidden-size",
            str(H),
            "--decoder-out-embed-dim",
            str(H),
            "--share-decoder-input-output-embed",
            "--criterion",
            "cross_entropy",
            "--tokens-per-sample",
            "1024",
        ] + common(H, args.e2e_updates, args.batch, args.device)
        runs["lstm_lm (language_modeling, en)"] = run_train(lstm)
        for layout in args.search_weights:
            for mode in args.e2e_modes:
                name = f"search o1 {layout} ({'compiled' if mode == 'on' else 'eager'} cell)"
                runs[name] = run_train(
                    nas_command(data, H, args, ["--compile-cell", mode, "--search-weights", layout])
                )
        runs["derived (eager cell)"] = run_train(
            nas_command(data, H, args, ["--compile-cell", "off", "--genotype", genotype_path(H)])
        )
        base = runs["lstm_lm (language_modeling, en)"][0]
        lines.append(f"hidden {H}:")
        for name, (wps, wall) in runs.items():
            rates[(H, name)] = wps / base
            lines.append(f"  {name:<38}{wps:>10.0f}{wps / base:>12.2f}{wall:>9.0f}")
        print("\n".join(lines[-len(runs) - 1 :]), flush=True)
    return lines, rates
