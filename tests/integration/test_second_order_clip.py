"""The second-order virtual step inside fairseq follows the real step, ``--clip-norm`` included: the
task passes fairseq's clip norm to the virtual step, and the gradient it clips is normalised as
fairseq's trainer normalises the real one (the summed loss's gradient divided by the sample size)."""

import pytest
import torch

from mdnas_fairseq.search.virtual_step import ClippedVirtualStep
from mdnas_fairseq.tasks.bilevel.optimizers import virtual_step_for
from tests.helpers.fairseq_runs import build_in_process, first_batches


@pytest.fixture(scope="module")
def data_bin(tiny_corpus):
    return tiny_corpus(200)


@pytest.mark.parametrize(
    "optimizer_args", [["--optimizer", "sgd", "--lr", "1.0"], ["--lr", "0.01"]]
)
def test_virtual_step_is_the_trainers_normalise_clip_and_step(data_bin, tmp_path, optimizer_args):
    task, model, criterion, optimizer = build_in_process(
        data_bin, str(tmp_path), extra=["--alpha-order", "2"] + optimizer_args
    )
    assert task.cfg.clip_norm == 0.25  # fairseq's --clip-norm (train_args), read by the task
    model.train()
    sample = first_batches(task, 1)[0]
    weights = task.architect.trainable_weights
    assert [id(w) for w in weights] == [id(p) for p in optimizer.params]

    # the virtual step of the glue, on the per-token training objective's gradient
    virtual = virtual_step_for(optimizer, weights, task.cfg.clip_norm)
    assert isinstance(virtual, ClippedVirtualStep) and virtual.max_norm == 0.25
    torch.manual_seed(7)  # the same dropout masks in both passes
    grads = torch.autograd.grad(criterion.weight_objective(model, sample), weights)
    virtual_weights = [w.detach().clone() for w in weights]
    virtual.apply(virtual_weights, grads)

    # fairseq's trainer: backward of the summed loss, multiply_grads(1 / sample_size), clip, step
    torch.manual_seed(7)
    loss, sample_size, _ = criterion(model, sample)
    optimizer.zero_grad()
    optimizer.backward(loss)
    optimizer.multiply_grads(1.0 / sample_size)
    norm = float(optimizer.clip_grad_norm(task.cfg.clip_norm))
    assert norm > 2 * task.cfg.clip_norm  # the real step clips
    # the gradient the virtual step applies its rule to is the one fairseq's step gets, up to float32
    # rounding (a mean's gradient against a sum's divided by its size)
    _, clipped = virtual.clipped(grads)
    for w, c in zip(weights, clipped):
        torch.testing.assert_close(c, w.grad, rtol=0, atol=1e-7)
    optimizer.step()
    # Adam's first step, lr g / (|g| + 1e-8) per entry, turns that rounding of near-zero entries into
    # up to ~1e-3 of its step size (the rule itself equals fairseq's to float32 rounding:
    # tests/unit/test_virtual_step.py)
    tol = 1e-6 if "sgd" in optimizer_args else 1e-5
    for w, v in zip(weights, virtual_weights):
        torch.testing.assert_close(v, w.detach(), rtol=0, atol=tol)
