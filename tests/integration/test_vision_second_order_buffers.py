"""The vision search's second-order alpha step through the task: the conv cell's batch norms see the
weight step's batch only, as without the alpha step (the task hands the model's buffers to the
architect, which restores them after the passes at w, w' and w +- eps u)."""

import copy

import torch

from tests.helpers.fairseq_runs import build_from_argv, first_batches
from tests.helpers.vision_runs import search_argv


def test_train_step_leaves_the_statistics_of_the_weight_step_only(tmp_path):
    task, model, criterion, optimizer = build_from_argv(
        search_argv(str(tmp_path), "0,90", ["--alpha-order", "2", "--optimizer", "sgd"])
    )
    model.train()
    sample = first_batches(task, 1)[0]
    stats = [k for k in model.state_dict() if "running_" in k or "num_batches" in k]
    assert any(".cell." in k for k in stats) and any("stem" in k for k in stats)
    reference = copy.deepcopy(model)
    alpha = task.architect.alphas[0]
    before = alpha.detach().clone()

    task.train_step(sample, model, criterion, optimizer, update_num=0)
    assert not torch.equal(alpha, before)  # the alpha step was taken

    # the same weight step's forward without the alpha step, at the new alpha
    with torch.no_grad():
        reference.network.alphas.alpha.copy_(alpha)
    criterion(reference, sample)
    got, want = model.state_dict(), reference.state_dict()
    for key in stats:
        assert torch.equal(got[key], want[key]), key
