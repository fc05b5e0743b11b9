"""Mixed precision (``--fp16``) on CPU, as fairseq runs it: ``--cpu --fp16 --fp16-no-flatten-grads``.

fairseq's overflow handler calls CUDA, so on CPU any gradient overflow ends the run with an error:
a run that finishes had no overflow (at a small initial loss scale, 4). The search must keep alpha
and its optimizer in fp32 while the weights are fp16.
"""

import json
import math
import os

import pytest
import torch

from mdnas_fairseq.search import ArchitectureParameters, darts_rnn_space, load_genotype, mix
from tests.helpers.fairseq_runs import BIN, USER_DIR, run, train_args

FP16 = ["--fp16", "--fp16-no-flatten-grads", "--fp16-init-scale", "4"]
ALPHA = "decoder.lm.alphas.alpha"


@pytest.fixture(scope="module")
def data_bin(tiny_corpus):
    return tiny_corpus(200)


def load_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_alpha_stays_fp32_in_a_half_model_and_gets_gradients():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.alphas = ArchitectureParameters(1, 1, 3, init_scale=1.0)

    net = Net().half()
    assert net.lin.weight.dtype == torch.float16 and net.alphas.alpha.dtype == torch.float32
    x = torch.randn(5, 4).half()
    with net.alphas.trainable():
        h = net.lin(x)
        weights = net.alphas.mixing_probs(0)[0].to(h.dtype)
        out = mix(torch.stack([h, torch.tanh(h), torch.relu(h)]), weights)
        (grad,) = torch.autograd.grad(out.float().sum(), net.alphas.alpha)
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().max() > 0


# the "small" preset's dropouts (embedding, input, state, output) at test sizes
SMALL = ["--dropout", "0.3", "--dropout-emb", "0.05", "--dropout-x", "0.1", "--dropout-h", "0.1"]


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_lm_search_retrain_and_eval_in_fp16(data_bin, tmp_path, memory_efficient):
    precision = FP16 + (["--memory-efficient-fp16"] if memory_efficient else [])
    search = str(tmp_path / "search")
    proc = run(
        train_args(
            data_bin,
            search,
            extra=[
                "--max-epoch",
                "2",
                "--struct-coef",
                "0.5",
                "--contrastive-coef",
                "0.1",
                "--eta-p",
                "0.5",
                "--alpha-lr",
                "0.05",
            ]
            + SMALL
            + precision,
        )
    )
    log = proc.stdout + proc.stderr
    assert "overflow" not in log and "loss_scale 4" in log
    alpha = load_ckpt(os.path.join(search, "checkpoint_last.pt"))["model"][ALPHA]
    assert alpha.dtype == torch.float32 and torch.isfinite(alpha).all() and alpha.abs().max() > 0.01
    genotype = os.path.join(search, "genotype.json")
    load_genotype(genotype, domains=["en", "de"], space=darts_rnn_space(3))
    if memory_efficient:
        return  # retraining and evaluating are plain fairseq: the other variant covers them
    retrain = str(tmp_path / "retrain")
    run(
        train_args(
            data_bin,
            retrain,
            extra=["--max-epoch", "1", "--genotype", genotype] + SMALL + precision,
        )
    )
    state = load_ckpt(os.path.join(retrain, "checkpoint_last.pt"))["model"]
    assert (
        sum(v.numel() for k, v in state.items() if not k.endswith("fingerprint"))
        == json.load(open(genotype))["param_counts"]["multimodel"]
    )
    for domain in ("en", "de"):
        out = run(
            [
                os.path.join(BIN, "fairseq-eval-lm"),
                data_bin,
                "--user-dir",
                USER_DIR,
                "--task",
                "multidomain_nas",
                "--path",
                os.path.join(retrain, "checkpoint_last.pt"),
                "--gen-subset",
                f"test.{domain}",
                "--cpu",
                "--batch-size",
                "8",
                "--num-workers",
                "0",
            ]
        )
        line = [ln for ln in (out.stdout + out.stderr).splitlines() if "Perplexity:" in ln][-1]
        ppl = float(line.rsplit("Perplexity:", 1)[1])
        assert (
            math.isfinite(ppl) and 1 < ppl < 2 * 312
        )  # finite, and no worse than twice uniform over the vocabulary


def test_vision_search_and_retrain_in_fp16(tmp_path):
    from tests.helpers.vision_runs import search_argv as _search_argv
    from tests.helpers.vision_runs import train_in_child as _train_in_child

    save = str(tmp_path / "search")
    _train_in_child(
        _search_argv(
            save,
            "0,90",
            [
                "--max-epoch",
                "2",
                "--contrastive-coef",
                "0.1",
                "--struct-coef",
                "1",
                "--alpha-lr",
                "0.05",
            ]
            + FP16,
        )
    )
    alpha = load_ckpt(os.path.join(save, "checkpoint_last.pt"))["model"]["net.alphas.alpha"]
    assert alpha.dtype == torch.float32 and torch.isfinite(alpha).all() and alpha.abs().max() > 0.01
    genotype = os.path.join(save, "genotype.json")
    retrain = str(tmp_path / "retrain")
    _train_in_child(
        _search_argv(retrain, "0,90", ["--max-epoch", "1", "--genotype", genotype] + FP16)
    )
    state = load_ckpt(os.path.join(retrain, "checkpoint_last.pt"))["model"]
    assert all(torch.isfinite(v.float()).all() for v in state.values() if v.is_floating_point())
