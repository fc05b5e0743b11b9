"""Tests of ``DomainSampler``: d ~ Categorical(p), fixed or robust p = softmax(eta_p * L_hat)."""
import numpy as np
import pytest
import torch
from scipy.special import softmax as np_softmax
from scipy.stats import chisquare

from mdnas_fairseq.search import DomainSampler

N_DRAWS = 20000


def draw_counts(sampler, seed, n=N_DRAWS):
    gen = torch.Generator().manual_seed(seed)
    counts = np.zeros(sampler.num_domains, dtype=np.int64)
    for _ in range(n):
        counts[sampler.sample(generator=gen)] += 1
    return counts


@pytest.mark.parametrize("probs", [[0.5, 0.3, 0.2], [0.1, 0.1, 0.7, 0.1], None])
def test_fixed_probabilities_are_sampled(probs):
    sampler = DomainSampler(len(probs) if probs else 5, probs=probs)
    expected_p = np.array(probs) if probs else np.full(5, 0.2)
    np.testing.assert_allclose(sampler.probs.numpy(), expected_p, rtol=1e-15)
    counts = draw_counts(sampler, seed=42)
    assert counts.sum() == N_DRAWS
    # chi-square goodness of fit against the given probabilities ...
    assert chisquare(counts, N_DRAWS * expected_p).pvalue > 1e-3
    # ... with enough power to reject a visibly different distribution
    other = np.roll(expected_p, 1) if probs else np.array([0.22, 0.2, 0.2, 0.2, 0.18])
    assert chisquare(counts, N_DRAWS * other).pvalue < 1e-6


def test_zero_probability_domain_is_never_drawn_and_probs_are_normalised():
    sampler = DomainSampler(3, probs=[2.0, 0.0, 6.0])
    np.testing.assert_allclose(sampler.probs.numpy(), [0.25, 0.0, 0.75], rtol=1e-15)
    counts = draw_counts(sampler, seed=1, n=4000)
    assert counts[1] == 0
    assert chisquare(counts[[0, 2]], 4000 * np.array([0.25, 0.75])).pvalue > 1e-3


def test_sampling_is_reproducible_with_a_generator():
    sampler = DomainSampler(4)
    a = [sampler.sample(torch.Generator().manual_seed(9)) for _ in range(3)]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [sampler.sample(g1) for _ in range(50)] == [sampler.sample(g2) for _ in range(50)]
    assert len(set(a)) == 1


def test_robust_update_is_softmax_of_scaled_loss_estimates():
    sampler = DomainSampler(3, eta_p=0.7, loss_ema=0.9)
    # no update while a domain has no estimate
    sampler.observe(0, 2.0)
    sampler.observe(1, 5.0)
    np.testing.assert_allclose(sampler.update().numpy(), [1 / 3] * 3, rtol=1e-15)
    sampler.observe(2, 1.0)
    # moving average: the first value is taken as is, later ones 0.9 * old + 0.1 * new
    sampler.observe(0, 4.0)  # 0.9 * 2 + 0.1 * 4 = 2.2
    sampler.observe(1, 5.0)  # 5.0
    sampler.observe(1, 3.0)  # 0.9 * 5 + 0.1 * 3 = 4.8
    np.testing.assert_allclose(sampler.loss_estimates.numpy(), [2.2, 4.8, 1.0], rtol=1e-14)
    p = sampler.update()
    np.testing.assert_allclose(p.numpy(), np_softmax(0.7 * np.array([2.2, 4.8, 1.0])), rtol=1e-12)
    assert p.dtype == torch.float64
    # the worst domain (largest loss) is now the most likely one
    assert int(p.argmax()) == 1
    # sampling follows the new p
    counts = draw_counts(sampler, seed=3)
    assert chisquare(counts, N_DRAWS * p.numpy()).pvalue > 1e-3


def test_eta_zero_keeps_given_probabilities():
    given = [0.6, 0.3, 0.1]
    sampler = DomainSampler(3, probs=given, eta_p=0.0)
    for d, loss in [(0, 9.0), (1, 1.0), (2, 4.0), (0, 2.0)]:
        sampler.observe(d, loss)
    np.testing.assert_allclose(sampler.update().numpy(), given, rtol=1e-15)
    np.testing.assert_allclose(sampler.probs.numpy(), given, rtol=1e-15)


def test_state_dict_round_trip():
    a = DomainSampler(3, eta_p=1.5)
    for d, loss in [(0, 1.0), (1, 2.5), (2, 0.5), (1, 3.0)]:
        a.observe(d, loss)
    a.update()
    state = a.state_dict()
    b = DomainSampler(3, eta_p=1.5)
    b.load_state_dict(state)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.loss_estimates, b.loss_estimates)
    # the saved state is a snapshot, not a view of the live sampler
    a.observe(0, 100.0)
    assert not torch.equal(a.loss_estimates, state["loss_estimates"])
    # identical continuation
    for s in (a, b):
        s.observe(2, 7.0)
    b.observe(0, 100.0)
    assert torch.equal(a.update(), b.update())
    assert draw_counts(a, 8, 200).tolist() == draw_counts(b, 8, 200).tolist()
    with pytest.raises(ValueError):
        DomainSampler(4).load_state_dict(state)


@pytest.mark.parametrize(
    "probs",
    [
        [0.5, 0.5, 0.5, 0.5],  # wrong count for 3 domains
        [0.5, 0.5],  # wrong count
        [-0.1, 0.6, 0.5],  # negative
        [0.0, 0.0, 0.0],  # zero sum
        [float("nan"), 0.5, 0.5],  # not a number
        [float("inf"), 0.5, 0.5],  # infinite
    ],
)
def test_bad_probabilities_raise(probs):
    with pytest.raises(ValueError):
        DomainSampler(3, probs=probs)


def test_bad_settings_raise():
    with pytest.raises(ValueError):
        DomainSampler(0)
    with pytest.raises(ValueError):
        DomainSampler(2, eta_p=-1.0)
    with pytest.raises(ValueError):
        DomainSampler(2, loss_ema=1.0)


def test_non_finite_losses_do_not_poison_p():
    # One inf (fp16 overflow) or NaN validation loss must not turn p into NaN (every later
    # torch.multinomial draw would then fail); such observations carry no estimate and are skipped.
    sampler = DomainSampler(2, eta_p=1.0)
    sampler.observe(0, 1.0)
    sampler.observe(1, 2.0)
    sampler.observe(0, float("inf"))
    sampler.observe(1, float("nan"))
    np.testing.assert_allclose(sampler.loss_estimates.numpy(), [1.0, 2.0])
    p = sampler.update()
    assert torch.isfinite(p).all()
    np.testing.assert_allclose(p.numpy(), np_softmax(np.array([1.0, 2.0])), rtol=1e-12)
    sampler.sample(torch.Generator().manual_seed(0))
