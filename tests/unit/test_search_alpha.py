"""Tests of ``ArchitectureParameters``, ``mix`` and ``annealed_temperature`` (docs/method.md, section 1)."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.special import softmax as np_softmax

from mdnas_fairseq.search import (
    ArchitectureParameters,
    alphas_trainable,
    annealed_temperature,
    architecture_parameters,
    mix,
    weight_parameters,
)


def make_params(D=3, E=4, K=5, seed=0):
    torch.manual_seed(seed)
    params = ArchitectureParameters(D, E, K).double()
    with torch.no_grad():
        params.alpha.copy_(
            torch.randn(D, E, K, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        )
    return params


def test_alpha_shape_and_requires_grad_only_inside_trainable():
    params = ArchitectureParameters(2, 3, 4)
    assert params.alpha.shape == (2, 3, 4) and params.num_domains == 2
    assert isinstance(params.alpha, nn.Parameter) and not params.alpha.requires_grad
    with params.trainable() as alpha:
        assert alpha is params.alpha and alpha.requires_grad
    assert not params.alpha.requires_grad
    with pytest.raises(ValueError):
        ArchitectureParameters(0, 3, 4)


def test_mixing_probs_per_sample_domains_match_numpy():
    params = make_params()
    alpha = params.alpha.detach().numpy()
    domains = torch.tensor([2, 0, 0, 1, 2, 1, 0])
    for temperature in (1.0, 0.3):
        weights = params.mixing_probs(domains, temperature=temperature)
        assert weights.shape == (7, 4, 5)
        expected = np.stack([np_softmax(alpha[d] / temperature, axis=-1) for d in domains.tolist()])
        np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-12, atol=1e-15)
    # one domain, and all domains
    np.testing.assert_allclose(
        params.mixing_probs(1).numpy(), np_softmax(alpha[1], axis=-1), rtol=1e-12
    )
    np.testing.assert_allclose(
        params.mixing_probs().numpy(), np_softmax(alpha, axis=-1), rtol=1e-12
    )
    with pytest.raises(IndexError):
        params.mixing_probs(3)
    with pytest.raises(IndexError):
        params.mixing_probs(-1)


def test_mixing_probs_gradient_reaches_only_the_samples_domains():
    params = make_params()
    with params.trainable():
        weights = params.mixing_probs(torch.tensor([0, 2, 0]))
        weights[:, 1, 3].sum().backward()
    grad = params.alpha.grad
    assert grad[1].abs().max() == 0  # domain 1 is not in the batch
    assert grad[0, 1].abs().max() > 0 and grad[2, 1].abs().max() > 0
    assert grad[:, [0, 2, 3]].abs().max() == 0  # other edges untouched


def test_gumbel_weights_are_distributions_and_eval_is_plain_softmax():
    params = make_params()
    torch.manual_seed(123)
    params.train()
    soft = params.mixing_probs(torch.tensor([0, 1, 2, 1]), temperature=0.5, gumbel=True)
    assert soft.shape == (4, 4, 5)
    torch.testing.assert_close(
        soft.sum(-1), torch.ones(4, 4, dtype=torch.float64), rtol=0, atol=1e-12
    )
    assert (soft >= 0).all()
    # a sample, not the softmax itself
    assert not torch.allclose(
        soft, params.mixing_probs(torch.tensor([0, 1, 2, 1]), temperature=0.5)
    )
    hard = params.mixing_probs(None, temperature=0.5, gumbel=True, hard=True)
    torch.testing.assert_close(
        hard.sum(-1), torch.ones(3, 4, dtype=torch.float64), rtol=0, atol=1e-12
    )
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    params.eval()
    deterministic = params.mixing_probs(None, temperature=0.5, gumbel=True)
    np.testing.assert_allclose(
        deterministic.numpy(), np_softmax(params.alpha.detach().numpy() / 0.5, axis=-1), rtol=1e-12
    )


def test_mix_equals_explicit_loop():
    gen = torch.Generator().manual_seed(1)
    K, B, T, H = 4, 5, 3, 2
    candidates = torch.randn(K, B, T, H, generator=gen, dtype=torch.float64)
    # one weight vector for the batch: (K,)
    w = torch.softmax(torch.randn(K, generator=gen, dtype=torch.float64), 0)
    expected = torch.zeros(B, T, H, dtype=torch.float64)
    for k in range(K):
        expected += w[k] * candidates[k]
    torch.testing.assert_close(mix(candidates, w), expected, rtol=1e-12, atol=1e-14)
    # one per sample: (B, K)
    wb = torch.softmax(torch.randn(B, K, generator=gen, dtype=torch.float64), 1)
    expected = torch.zeros(B, T, H, dtype=torch.float64)
    for b in range(B):
        for k in range(K):
            expected[b] += wb[b, k] * candidates[k, b]
    torch.testing.assert_close(mix(candidates, wb), expected, rtol=1e-12, atol=1e-14)
    # 2-D candidates (K, B) too
    flat = candidates[:, :, 0, 0]
    torch.testing.assert_close(mix(flat, wb), torch.stack([wb[b] @ flat[:, b] for b in range(B)]))


def test_mix_rejects_mismatched_weights():
    candidates = torch.zeros(4, 5, 3)
    with pytest.raises(ValueError):
        mix(candidates, torch.zeros(4, 5))  # (K, B) instead of (B, K)
    with pytest.raises(ValueError):
        mix(candidates, torch.zeros(5, 3))
    with pytest.raises(ValueError):
        mix(candidates, torch.zeros(2, 5, 4))


def test_annealed_temperature_endpoints_and_geometric_midpoint():
    assert annealed_temperature(0, 100, start=2.0, end=0.05) == pytest.approx(2.0, rel=1e-12)
    assert annealed_temperature(100, 100, start=2.0, end=0.05) == pytest.approx(0.05, rel=1e-12)
    # clamped outside [0, total]
    assert annealed_temperature(500, 100, start=2.0, end=0.05) == pytest.approx(0.05, rel=1e-12)
    assert annealed_temperature(-5, 100, start=2.0, end=0.05) == pytest.approx(2.0, rel=1e-12)
    # exponential: halfway is the geometric mean sqrt(2 * 0.05) = sqrt(0.1)
    assert annealed_temperature(50, 100, start=2.0, end=0.05) == pytest.approx(
        math.sqrt(0.1), rel=1e-12
    )
    # monotone decreasing
    temps = [annealed_temperature(s, 10) for s in range(11)]
    assert all(a > b for a, b in zip(temps, temps[1:]))
    assert annealed_temperature(3, 0, start=1.0, end=0.2) == 0.2


def test_parameter_helpers_find_alphas_by_kind():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.cell_a = ArchitectureParameters(2, 3, 4)
            self.inner = nn.Sequential(nn.Linear(2, 1), ArchitectureParameters(2, 1, 3))

    net = Net()
    alphas = architecture_parameters(net)
    assert [id(a) for a in alphas] == [id(net.cell_a.alpha), id(net.inner[1].alpha)]
    weights = weight_parameters(net)
    assert {id(p) for p in weights} == {id(p) for p in net.parameters()} - {id(a) for a in alphas}
    assert len(weights) == 4
    with alphas_trainable(net) as inside:
        assert len(inside) == 2 and all(a.requires_grad for a in alphas)
    assert not any(a.requires_grad for a in alphas)
