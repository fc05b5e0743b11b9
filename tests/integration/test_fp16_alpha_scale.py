"""An fp16 search whose alpha gradient overflows resumes exactly: the alpha step's loss-scale factor
and its window counter are task state.

On a CPU fairseq's own overflow handler calls CUDA, so the overflow is forced in the alpha step
only: the factor starts at 2**20 (tests/helpers/fp16_alpha_scale.py), the first alpha gradient
overflows, the factor halves, grows back after --fp16-scale-window steps, overflows again, ...
The weight loss scale (--fp16-init-scale 4, doubled every 4 updates) never overflows. fairseq does
not save its own scaler's window counter, only its scale: the run is split at an update that is a
multiple of the window so that the weight scale grows at the same updates in both runs. The run
uses --memory-efficient-fp16: fairseq's plain --fp16 optimizer keeps fp32 master weights that its
checkpoint does not hold (it rebuilds them from the fp16 model), so a plain fp16 search resumes
with weights rounded to fp16 and is not bit-identical, alpha overflow or not (seen on this setup:
8 of 9 tensors differ after a resume at update 12 without any overflow).
"""

import json
import os
import sys

import pytest
import torch

from tests.helpers.fairseq_runs import ROOT, run, train_args

ALPHA = "decoder.lm.alphas.alpha"
HELPER = os.path.join(ROOT, "tests", "helpers", "fp16_alpha_scale.py")
WINDOW = 4
FP16 = ["--fp16", "--memory-efficient-fp16", "--fp16-init-scale", "4"]
FP16 += ["--fp16-scale-window", str(WINDOW)]
COMMON = ["--alpha-lr", "0.05", "--eta-p", "0.5", "--log-interval", "1"]


@pytest.fixture(scope="module")
def data_bin(tiny_corpus):
    return tiny_corpus(200)


def search(data_bin, save_dir, max_update):
    out = os.path.join(save_dir, f"scale_{max_update}.json")
    argv = train_args(data_bin, save_dir, extra=COMMON + FP16 + ["--max-update", str(max_update)])
    proc = run([sys.executable, HELPER, out] + argv[1:], env={"ALPHA_SCALE_FACTOR": str(2.0**20)})
    with open(out) as f:
        return json.load(f), proc.stdout + proc.stderr


def load_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_resumed_fp16_search_after_an_alpha_overflow_is_exact(data_bin, tmp_path):
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    uninterrupted, log = search(data_bin, full, 16)
    factors = uninterrupted["factors"]  # after each alpha step
    assert len(factors) == 16
    assert "alpha gradient overflowed" in log and "alpha_scale_factor" in log  # logged
    stop = 3 * WINDOW  # the split, after overflows and a grow-back
    assert factors[0] == 2.0**19  # the first alpha gradient overflowed: halved
    assert max(factors[:stop]) == 2.0**20  # and grew back
    assert factors[stop - 1] != 2.0**20  # the split holds a factor another than the start's

    first, _ = search(data_bin, split, stop)
    saved = load_ckpt(os.path.join(split, "checkpoint_last.pt"))["task_state"]
    assert saved["alpha_loss_scale"]["factor"] == factors[stop - 1] == first["factor"]
    resumed, log = search(data_bin, split, 16)
    assert "restoring alpha optimizer, alpha-step loss scale" in log
    assert resumed["factors"] == factors[stop:]
    assert resumed["factor"] == uninterrupted["factor"]

    a = load_ckpt(os.path.join(full, "checkpoint_last.pt"))
    b = load_ckpt(os.path.join(split, "checkpoint_last.pt"))
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"]
    assert torch.equal(a["model"][ALPHA], b["model"][ALPHA])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["task_state"]["alpha_loss_scale"] == b["task_state"]["alpha_loss_scale"]
