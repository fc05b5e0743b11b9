"""End-to-end checks of ``mdnas_transformer_lm`` through fairseq's own commands, as users run them:
search (second order with struct + contrastive; first order, data-parallel, of the
--shared-architecture union), resume, retrain with --genotype, eval-lm per domain, mdnas-draw and
mdnas-report."""

import json
import os
import socket
import subprocess
import sys
import traceback

import pytest
import torch

from mdnas_fairseq.search import load_genotype, transformer_lm_space
from tests.helpers.fairseq_runs import (
    ROOT,
    build_from_argv,
    first_batches,
    make_tiny_corpus,
    run,
    train_args,
)
from tests.integration.test_lm_fairseq import _direct_ppl, _eval_lm_ppl, load_ckpt
from tests.integration.test_search_step import PACKAGE, READERS

CAPTURE = os.path.join(ROOT, "tests", "helpers", "fairseq_capture.py")
ALPHA = "decoder.lm.alphas.alpha"
RNN_SIZES = ["--embed-dim", "16", "--hidden-dim", "16", "--num-nodes", "3"]
SIZES = [
    "--decoder-embed-dim",
    "16",
    "--decoder-ffn-embed-dim",
    "32",
    "--decoder-attention-heads",
    "2",
    "--decoder-layers",
    "2",
    "--decoder-conv-kernel-sizes",
    "3",
    "--batch-size",
    "32",
]  # fewer, larger steps
SPACE = transformer_lm_space(2, (3,))
SEARCH = [
    "--struct-coef",
    "0.5",
    "--contrastive-coef",
    "0.1",
    "--alpha-order",
    "2",
    "--alpha-lr",
    "0.01",
    "--eta-p",
    "0.5",
]


def tf_args(data_bin, save_dir, extra=(), domains="en,de"):
    cmd = train_args(data_bin, save_dir, domains=domains, arch="mdnas_transformer_lm_tiny")
    assert cmd[-len(RNN_SIZES) :] == RNN_SIZES, (
        "tests/helpers/fairseq_runs.train_args changed: update this test's sizes"
    )
    return cmd[: -len(RNN_SIZES)] + SIZES + list(extra)


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory):
    return make_tiny_corpus(str(tmp_path_factory.mktemp("tfdata")), rows=200, vocab_size=200)


@pytest.fixture(scope="module")
def search_dir(data_bin, tmp_path_factory):
    """A 2-epoch second-order search with both regularizers (heatmaps on)."""
    save = str(tmp_path_factory.mktemp("tfsearch"))
    cmd = tf_args(data_bin, save, SEARCH + ["--max-epoch", "2"])
    cmd.remove("--no-alpha-heatmaps")
    run(cmd)
    return save


def test_search_writes_genotypes_of_the_masked_alpha(search_dir):
    g = load_genotype(os.path.join(search_dir, "genotype.json"), domains=["en", "de"], space=SPACE)
    raw = json.load(open(os.path.join(search_dir, "genotype.json")))
    alpha = load_ckpt(os.path.join(search_dir, "checkpoint_last.pt"))["model"][ALPHA]
    mask = torch.tensor(SPACE.allowed_mask())
    assert alpha[:, mask].abs().max() > 1e-2  # the search moved alpha
    assert torch.all(
        alpha[:, ~mask] == 0
    )  # disallowed entries: stored 0, never moved (read masked)
    for k, d in enumerate(("en", "de")):
        probs = torch.tensor(raw["alpha"][d], dtype=torch.float64)
        assert torch.all(probs[~mask] == 0)
        assert torch.allclose(probs.sum(-1), torch.ones(SPACE.num_edges, dtype=torch.float64))
        for e in g.cells[d]:
            row = (
                alpha[k, SPACE.edge_index(e.input, e.node)]
                .double()
                .masked_fill(~mask[e.node - 1], float("-inf"))
            )
            row[SPACE.op_index("none")] = float("-inf")
            assert SPACE.operations[int(row.argmax())] == e.op
        assert os.path.getsize(os.path.join(search_dir, "heatmaps", f"alpha_{d}_epoch2.png")) > 0
    assert raw["settings"]["alpha_order"] == 2 and raw["settings"]["contrastive_coef"] == 0.1


def test_resume_continues_the_second_order_search_exactly(search_dir, data_bin, tmp_path):
    split = str(tmp_path / "split")
    run(tf_args(data_bin, split, SEARCH + ["--max-update", "5"]))  # stops mid-epoch
    proc = run(tf_args(data_bin, split, SEARCH + ["--max-epoch", "2"]))
    assert "restoring alpha optimizer" in proc.stdout + proc.stderr
    a = load_ckpt(os.path.join(search_dir, "checkpoint_last.pt"))
    b = load_ckpt(os.path.join(split, "checkpoint_last.pt"))
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_retrained_multimodel_size_modules_and_eval_lm(search_dir, data_bin, tmp_path):
    genotype = os.path.join(search_dir, "genotype.json")
    retrain = str(tmp_path / "retrain")
    run(tf_args(data_bin, retrain, ["--max-epoch", "1", "--genotype", genotype]))
    checkpoint = os.path.join(retrain, "checkpoint_last.pt")
    state = load_ckpt(checkpoint)["model"]
    g = load_genotype(genotype)
    params = {k: v for k, v in state.items() if not k.endswith(("fingerprint", "_float_tensor"))}
    assert (
        sum(v.numel() for v in params.values())
        == json.load(open(genotype))["param_counts"]["multimodel"]
    )
    modules = {k.split("lm.ops.")[1].split(".")[0] for k in state if ".lm.ops." in k}
    weighted = {f"node{e.node}_{e.op}" for e in g.union_edges() if e.op != "identity"}
    assert modules == weighted and ALPHA not in state
    loss2, _ = _eval_lm_ppl(data_bin, checkpoint, "--gen-subset", "test", "--eval-domain", "de")
    assert 2**loss2 == pytest.approx(_direct_ppl(data_bin, checkpoint, "de"), rel=1e-3)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_first_order_union_search_keeps_alpha_identical(data_bin, tmp_path):
    """Two gloo workers search the --shared-architecture baseline (first order)."""
    dump = tmp_path / "dump"
    port = _free_port()
    procs = []
    for rank in (0, 1):
        cmd = [sys.executable, CAPTURE, str(dump), "train"] + tf_args(
            data_bin,
            str(tmp_path / "ckpt"),
            [
                "--max-epoch",
                "1",
                "--shared-architecture",
                "--alpha-lr",
                "0.02",
                "--eta-p",
                "0.5",
                "--distributed-backend",
                "gloo",
                "--ddp-backend",
                "legacy_ddp",
                "--distributed-world-size",
                "2",
                "--distributed-init-method",
                f"tcp://127.0.0.1:{port}",
                "--distributed-no-spawn",
                "--distributed-rank",
                str(rank),
            ],
        )[1:]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        procs.append(
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{out[-4000:]}"
    r0, r1 = torch.load(dump / "rank0_epoch1.pt"), torch.load(dump / "rank1_epoch1.pt")
    assert r0[ALPHA].abs().max() > 1e-2 and tuple(r0[ALPHA].shape) == (
        1,
        SPACE.num_edges,
        SPACE.num_ops,
    )
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert list(load_genotype(str(tmp_path / "ckpt" / "genotype.json"), space=SPACE).domains) == [
        "en+de"
    ]


def test_fp16_search_keeps_alpha_fp32(data_bin, tmp_path):
    """fairseq's --fp16 on CPU (as tests/test_fp16.py runs it): half weights, fp32 alpha, no overflow."""
    save = str(tmp_path / "fp16")
    proc = run(
        tf_args(
            data_bin,
            save,
            [
                "--max-epoch",
                "1",
                "--struct-coef",
                "0.5",
                "--alpha-lr",
                "0.05",
                "--fp16",
                "--fp16-no-flatten-grads",
                "--fp16-init-scale",
                "4",
            ],
        )
    )
    log = proc.stdout + proc.stderr
    assert (
        "overflow" not in log and "loss_scale 4" in log
    )  # the fp16 optimizer ran, never overflowed
    alpha = load_ckpt(os.path.join(save, "checkpoint_last.pt"))["model"][ALPHA]
    assert alpha.dtype == torch.float32 and torch.isfinite(alpha).all()
    assert torch.all(alpha[:, ~torch.tensor(SPACE.allowed_mask())] == 0)  # stored 0, never moved
    assert (
        torch.isfinite(alpha).all()
        and alpha[:, torch.tensor(SPACE.allowed_mask())].abs().max() > 1e-2
    )
    load_genotype(os.path.join(save, "genotype.json"), space=SPACE)


def test_hot_path_reads_nothing_back_from_tensors(data_bin, tmp_path, monkeypatch):
    """As tests/test_search_step.py checks for the recurrent model: no host reads from the package's
    code in a second-order train step or a valid step of the Transformer."""
    task, model, criterion, optimizer = build_from_argv(
        tf_args(data_bin, str(tmp_path), SEARCH)[1:]
    )
    batches = first_batches(task, 2)
    task.train_step(batches[0], model, criterion, optimizer, update_num=0)  # warm-up
    calls = []
    for name in READERS:
        original = getattr(torch.Tensor, name)

        def reader(self, *args, _original=original, _name=name, **kwargs):
            caller = traceback.extract_stack()[-2]
            if caller.filename.startswith(PACKAGE):
                calls.append(f"{_name} at {caller.filename}:{caller.lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, reader)
    task.train_step(batches[1], model, criterion, optimizer, update_num=1)
    model.eval()
    task.valid_step(batches[1], model, criterion)
    assert calls == []


def test_draw_and_report_on_the_transformer_search(search_dir, tmp_path, capsys):
    from mdnas_fairseq.viz import draw, report

    figures = str(tmp_path / "figures")
    assert draw.main([search_dir, "--out", figures, "--format", "svg"]) == 0
    svg = open(os.path.join(figures, "genotype_union.svg"), encoding="utf-8").read()
    assert "layer 2, channel mixing" in svg and "embeddings + positions" in svg
    g = load_genotype(os.path.join(search_dir, "genotype.json"))
    assert all(e.op in svg for e in g.union_edges())
    path = report.write_report(search_dir)
    text = open(path, encoding="utf-8").read()
    assert "Search space `transformer_lm`" in text and "1: layer 1, token mixing" in text
    multimodel = json.load(open(os.path.join(search_dir, "genotype.json")))["param_counts"][
        "multimodel"
    ]
    assert f"Multimodel parameters: **{multimodel}**" in text
