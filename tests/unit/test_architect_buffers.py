"""A second-order alpha step leaves batch-norm running statistics as it found them (the passes at
``w``, ``w'`` and ``w +- eps u`` run in training mode and would each update them), so the following
weight step sees exactly what it would see without the alpha step."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mdnas_fairseq.search import (
    ArchitectureParameters,
    BilevelArchitect,
    SGDVirtualStep,
    architecture_parameters,
    mix,
    weight_parameters,
)


class BatchNormNet(nn.Module):
    """linear -> BatchNorm1d -> mixed op (per-domain alpha) -> BatchNorm1d (affine) -> linear."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin1 = nn.Linear(3, 6)
        self.bn1 = nn.BatchNorm1d(6, affine=False)
        self.bn2 = nn.BatchNorm1d(6)
        self.lin2 = nn.Linear(6, 1)
        self.alphas = ArchitectureParameters(2, 1, 3, init_scale=1.0)

    def forward(self, x, domains):
        h = self.bn1(self.lin1(x))
        probs = self.alphas.mixing_probs(domains)[:, 0]
        h = mix(torch.stack([torch.tanh(h), torch.sigmoid(h), h]), probs)
        return self.lin2(self.bn2(h))


def batch(seed, size=16):
    gen = torch.Generator().manual_seed(seed)
    x = 2.0 + torch.randn(size, 3, generator=gen, dtype=torch.float64)
    return x, torch.arange(size) % 2, torch.randn(size, 1, generator=gen, dtype=torch.float64)


TRAIN, VAL, NEXT = batch(1), batch(2), batch(3)


def closures(model):
    def loss(data):
        x, d, y = data
        return F.mse_loss(model(x, d), y)

    return (lambda: loss(TRAIN)), (lambda: loss(VAL))


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("difference", ["central", "forward"])
@pytest.mark.parametrize("as_callable", [True, False])
def test_second_order_step_restores_batch_norm_statistics(difference, as_callable):
    model = BatchNormNet().double().train()
    for _ in range(2):  # some history in the running statistics
        F.mse_loss(model(*NEXT[:2]), NEXT[2]).backward()
    model.zero_grad()
    buffers = model.buffers if as_callable else list(model.buffers())
    architect = BilevelArchitect(
        weight_parameters(model),
        architecture_parameters(model),
        order=2,
        difference=difference,
        lr=0.1,
        buffers=buffers,
    )
    assert len(architect.protected_buffers()) == 6  # mean, var, count of each batch norm
    reference = copy.deepcopy(model)  # the same model, alpha step not taken
    before = state(model)
    architect.step(*closures(model), virtual_step=SGDVirtualStep(lr=0.5))
    after = state(model)
    assert not torch.equal(after["alphas.alpha"], before["alphas.alpha"])  # the step was taken
    for key in before:
        if key != "alphas.alpha":
            assert torch.equal(after[key], before[key]), key  # statistics, counts and weights

    # the following weight step's forward normalises with the same statistics either way and
    # leaves the same running statistics (alpha aside, which the step changed)
    with torch.no_grad():
        reference.alphas.alpha.copy_(model.alphas.alpha)
    out, ref_out = model(*NEXT[:2]), reference(*NEXT[:2])
    assert torch.equal(out, ref_out)
    for (key, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), key
    model.eval()
    reference.eval()
    assert torch.equal(model(*VAL[:2]), reference(*VAL[:2]))


def test_buffers_of_a_moved_module_are_read_at_every_step():
    # fairseq's trainer moves the model (device, or .half()) after the task built it and its
    # architect: the module's buffers are then new tensors, which model.buffers still finds
    model = BatchNormNet().float().train()
    architect = BilevelArchitect(
        weight_parameters(model), architecture_parameters(model), order=2, buffers=model.buffers
    )
    model.double()
    before = state(model)
    architect.step(*closures(model), virtual_step=SGDVirtualStep(lr=0.5))
    for key, value in state(model).items():
        if key != "alphas.alpha":
            assert torch.equal(value, before[key]), key


def test_without_buffers_the_statistics_move():
    # what the step does to them unprotected (the check above can fail): four passes in training mode
    model = BatchNormNet().double().train()
    architect = BilevelArchitect(weight_parameters(model), architecture_parameters(model), order=2)
    before = state(model)
    architect.step(*closures(model), virtual_step=SGDVirtualStep(lr=0.5))
    after = state(model)
    assert int(after["bn1.num_batches_tracked"]) == int(before["bn1.num_batches_tracked"]) + 4
    assert not torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
