"""Shared helpers for the language-model tests: a tiny real corpus and fairseq command lines."""

import importlib.util
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER_DIR = os.path.join(ROOT, "mdnas_fairseq")
BIN = os.path.dirname(sys.executable)
EMBEDDED = os.path.join(ROOT, "examples", "data", "en_de_small.tsv")
EMBEDDED_3 = os.path.join(ROOT, "examples", "data", "en_de_fr_small.tsv")


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_tiny_corpus(out_dir, rows=400, langs=("en", "de"), vocab_size=300, seed=1, source=None):
    """First ``rows`` short rows of an embedded corpus, prepared with scripts/prepare_parallel.py."""
    os.makedirs(out_dir, exist_ok=True)
    tsv = os.path.join(out_dir, "tiny.tsv")
    source = source or (EMBEDDED if set(langs) <= {"en", "de"} else EMBEDDED_3)
    with open(source, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        kept = []
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if all(len(x.split()) <= 12 for x in fields):
                kept.append(fields)
            if len(kept) == rows:
                break
    cols = [header.index(lang) for lang in langs]
    with open(tsv, "w", encoding="utf-8") as f:
        f.write("\t".join(langs) + "\n")
        for fields in kept:
            f.write("\t".join(fields[c] for c in cols) + "\n")
    data = os.path.join(out_dir, "prepared")
    load_script("prepare_parallel").prepare(
        tsv,
        ",".join(langs),
        data,
        vocab_size=vocab_size,
        seed=seed,
        heldout_fraction=0.2,
        valid_fraction=0.1,
        test_fraction=0.1,
        workers=1,
        quiet=True,
    )
    return os.path.join(data, "data-bin")


# the recurrent search model's test sizes (train_args' default ``sizes``)
RNN_TEST_SIZES = ("--embed-dim", "16", "--hidden-dim", "16", "--num-nodes", "3")


def train_args(
    data_bin, save_dir, domains="en,de", arch="mdnas_rnn_tiny", extra=(), sizes=RNN_TEST_SIZES
):
    return (
        [
            os.path.join(BIN, "fairseq-train"),
            data_bin,
            "--user-dir",
            USER_DIR,
            "--task",
            "multidomain_nas",
            "--domains",
            domains,
            "--arch",
            arch,
            "--criterion",
            "multidomain_nas_loss",
            "--optimizer",
            "adam",
            "--lr",
            "0.003",
            "--clip-norm",
            "0.25",
            "--batch-size",
            "16",
            "--cpu",
            "--seed",
            "3",
            "--save-dir",
            save_dir,
            "--no-epoch-checkpoints",
            "--log-format",
            "simple",
            "--num-workers",
            "0",
            "--no-alpha-heatmaps",
        ]
        + list(sizes)
        + list(extra)
    )


def run(cmd, check=True, env=None):
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def build_in_process(data_bin, save_dir, domains="en,de", arch="mdnas_rnn_tiny", extra=()):
    """task, model, criterion and fairseq optimizer built as fairseq-train builds them (one process)."""
    return build_from_argv(
        train_args(data_bin, save_dir, domains=domains, arch=arch, extra=extra)[1:]
    )


def build_from_argv(argv):
    """task, model, criterion and fairseq optimizer of fairseq-train arguments, in this process."""
    from fairseq import optim, options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import mdnas_fairseq  # noqa: F401

    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    np.random.seed(cfg.common.seed)  # as fairseq-train seeds before it builds anything
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    task.load_dataset("train")
    return task, model, criterion, optimizer


def first_batches(task, n, seed=1):
    """The first ``n`` batches of the search's first epoch."""
    itr = task.get_batch_iterator(
        dataset=task.dataset("train"), max_sentences=task.cfg.batch_size, seed=seed
    )
    batches = itr.next_epoch_itr(shuffle=True)
    return [next(batches) for _ in range(n)]
