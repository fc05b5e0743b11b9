"""``--search-weights`` through fairseq-train: the node layout resumes exactly, and a checkpoint
saved before the option existed (no ``search_weights`` in its config) loads as the ``op`` layout."""

import os

import pytest
import torch

from tests.helpers.fairseq_runs import run, train_args
from tests.integration.test_lm_fairseq import load_ckpt

NODE_WEIGHTS = "decoder.lm.cell.node_weights.0"


@pytest.fixture(scope="module")
def data_bin(tiny_corpus):
    return tiny_corpus(400)


def test_node_layout_resumes_the_search_exactly(data_bin, tmp_path):
    common = ["--search-weights", "node", "--struct-coef", "0.3", "--alpha-lr", "0.02"]
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    run(train_args(data_bin, full, extra=common + ["--max-epoch", "2"]))
    run(train_args(data_bin, split, extra=common + ["--max-update", "7"]))  # stops mid-epoch
    run(train_args(data_bin, split, extra=common + ["--max-epoch", "2"]))
    a, b = (load_ckpt(os.path.join(d, "checkpoint_last.pt")) for d in (full, split))
    assert a["cfg"]["model"]["search_weights"] == "node"
    assert a["model"][NODE_WEIGHTS].shape == (16, 32)  # one (H, 2H) matrix per node
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_checkpoint_without_the_option_loads_as_op_layout(data_bin, tmp_path):
    from fairseq import checkpoint_utils

    import mdnas_fairseq  # noqa: F401

    save = str(tmp_path / "op")
    run(train_args(data_bin, save, extra=["--max-update", "2"]))
    ckpt = load_ckpt(os.path.join(save, "checkpoint_last.pt"))
    assert ckpt["cfg"]["model"]["search_weights"] == "op"
    del ckpt["cfg"]["model"]["search_weights"]  # as saved before the option existed
    old = os.path.join(save, "old.pt")
    torch.save(ckpt, old)
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task(
        [old], arg_overrides={"data": data_bin}
    )
    cell = models[0].decoder.lm.cell
    assert cell.search_weights == "op"
    assert torch.equal(cell.node_weights[0].detach(), ckpt["model"][NODE_WEIGHTS])
    assert ckpt["model"][NODE_WEIGHTS].shape == (4, 16, 32)  # (K', H, 2H)
