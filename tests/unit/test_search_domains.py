"""The domain distribution p (``DomainSampler``: fixed, or robust p = softmax(eta_p * L_hat)) and the
epoch layout that training really draws from it (``draw_domain_batches``)."""

import numpy as np
import pytest
import torch
from scipy.special import softmax as np_softmax
from scipy.stats import chisquare

from mdnas_fairseq.data import draw_domain_batches
from mdnas_fairseq.search import DomainSampler


def observe(sampler, domain, loss):
    """One held-out loss of one domain, through the vector API the trainer uses."""
    losses = torch.zeros(sampler.num_domains, dtype=torch.float64)
    seen = torch.zeros(sampler.num_domains, dtype=torch.bool)
    losses[domain], seen[domain] = loss, True
    sampler.observe(losses, seen)


def fake_batches(counts, size=2):
    """Per domain, ``counts[e]`` distinct index arrays (domain e's batch k holds 1000 e + k)."""
    return [[np.full(size, 1000 * e + k) for k in range(n)] for e, n in enumerate(counts)]


def domain_of(batch):
    return int(batch[0]) // 1000


# ----------------------------------------------------------------------- draw_domain_batches
@pytest.mark.parametrize("probs", [[0.5, 0.3, 0.2], [0.1, 0.1, 0.7, 0.1]])
def test_epoch_domains_follow_p(probs):
    per_entry = fake_batches([300] * len(probs))
    epoch = draw_domain_batches(per_entry, probs, np.random.RandomState(42))
    assert len(epoch) == 300 * len(probs)  # as many batches as the domains have together
    counts = np.bincount([domain_of(b) for b in epoch], minlength=len(probs))
    expected = np.array(probs) * len(epoch)
    assert chisquare(counts, expected).pvalue > 1e-3
    # with enough power to reject a visibly different distribution
    assert chisquare(counts, np.roll(expected, 1)).pvalue < 1e-6


def test_epoch_cycles_through_a_domains_batches_before_repeating():
    per_entry = fake_batches([5, 40])
    epoch = draw_domain_batches(per_entry, [0.5, 0.5], np.random.RandomState(1))
    small = [int(b[0]) for b in epoch if domain_of(b) == 0]
    assert len(small) > 10  # the small domain is drawn more often than it has batches
    for start in range(0, len(small) - 4, 5):  # every full round of 5 draws is a permutation
        assert sorted(small[start : start + 5]) == [0, 1, 2, 3, 4]


def test_domain_without_probability_or_batches_is_never_drawn():
    per_entry = fake_batches([10, 10, 0])
    epoch = draw_domain_batches(per_entry, [1.0, 0.0, 1.0], np.random.RandomState(0))
    assert {domain_of(b) for b in epoch} == {0}
    assert len(epoch) == 20
    with pytest.raises(ValueError):
        draw_domain_batches(fake_batches([0, 3]), [1.0, 0.0], np.random.RandomState(0))
    with pytest.raises(ValueError):
        draw_domain_batches(fake_batches([3, 3]), [1.0], np.random.RandomState(0))


def test_epoch_layout_is_reproducible_for_a_seed():
    per_entry = fake_batches([7, 9, 4])
    a = draw_domain_batches(per_entry, [0.2, 0.5, 0.3], np.random.RandomState(5))
    b = draw_domain_batches(per_entry, [0.2, 0.5, 0.3], np.random.RandomState(5))
    c = draw_domain_batches(per_entry, [0.2, 0.5, 0.3], np.random.RandomState(6))
    assert [int(x[0]) for x in a] == [int(x[0]) for x in b]
    assert [int(x[0]) for x in a] != [int(x[0]) for x in c]


# ----------------------------------------------------------------------- DomainSampler
def test_given_probabilities_are_normalised():
    sampler = DomainSampler(3, probs=[2.0, 0.0, 6.0])
    np.testing.assert_allclose(sampler.probs.numpy(), [0.25, 0.0, 0.75], rtol=1e-15)
    np.testing.assert_allclose(DomainSampler(5).probs.numpy(), np.full(5, 0.2), rtol=1e-15)


def test_robust_update_is_softmax_of_scaled_loss_estimates():
    sampler = DomainSampler(3, eta_p=0.7, loss_ema=0.9)
    # no update while a domain has no estimate
    observe(sampler, 0, 2.0)
    observe(sampler, 1, 5.0)
    np.testing.assert_allclose(sampler.update().numpy(), [1 / 3] * 3, rtol=1e-15)
    observe(sampler, 2, 1.0)
    # moving average: the first value is taken as is, later ones 0.9 * old + 0.1 * new
    observe(sampler, 0, 4.0)  # 0.9 * 2 + 0.1 * 4 = 2.2
    observe(sampler, 1, 5.0)  # 5.0
    observe(sampler, 1, 3.0)  # 0.9 * 5 + 0.1 * 3 = 4.8
    np.testing.assert_allclose(sampler.loss_estimates.numpy(), [2.2, 4.8, 1.0], rtol=1e-14)
    p = sampler.update()
    np.testing.assert_allclose(p.numpy(), np_softmax(0.7 * np.array([2.2, 4.8, 1.0])), rtol=1e-12)
    assert p.dtype == torch.float64
    # the worst domain (largest loss) is now the most likely one
    assert int(p.argmax()) == 1


def test_several_domains_observed_at_once():
    # one all-reduced record of a data-parallel update can hold several domains
    a, b = DomainSampler(3, eta_p=1.0), DomainSampler(3, eta_p=1.0)
    a.observe(torch.tensor([1.5, 0.0, 2.5], dtype=torch.float64), torch.tensor([True, False, True]))
    observe(b, 0, 1.5)
    observe(b, 2, 2.5)
    assert torch.equal(a.loss_estimates.isnan(), b.loss_estimates.isnan())
    np.testing.assert_allclose(
        a.loss_estimates[[0, 2]].numpy(), b.loss_estimates[[0, 2]].numpy(), rtol=0
    )


def test_eta_zero_keeps_given_probabilities():
    given = [0.6, 0.3, 0.1]
    sampler = DomainSampler(3, probs=given, eta_p=0.0)
    for d, loss in [(0, 9.0), (1, 1.0), (2, 4.0), (0, 2.0)]:
        observe(sampler, d, loss)
    np.testing.assert_allclose(sampler.update().numpy(), given, rtol=1e-15)
    np.testing.assert_allclose(sampler.probs.numpy(), given, rtol=1e-15)


def test_state_dict_round_trip():
    a = DomainSampler(3, eta_p=1.5)
    for d, loss in [(0, 1.0), (1, 2.5), (2, 0.5), (1, 3.0)]:
        observe(a, d, loss)
    a.update()
    state = a.state_dict()
    b = DomainSampler(3, eta_p=1.5)
    b.load_state_dict(state)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.loss_estimates, b.loss_estimates)
    # the saved state is a snapshot, not a view of the live sampler
    observe(a, 0, 100.0)
    assert not torch.equal(a.loss_estimates, state["loss_estimates"])
    # identical continuation
    for s in (a, b):
        observe(s, 2, 7.0)
    observe(b, 0, 100.0)
    assert torch.equal(a.update(), b.update())
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
    # One inf (fp16 overflow) or NaN held-out loss must not turn p into NaN (every later epoch's
    # draws would then fail); such observations carry no estimate and are skipped.
    sampler = DomainSampler(2, eta_p=1.0)
    observe(sampler, 0, 1.0)
    observe(sampler, 1, 2.0)
    observe(sampler, 0, float("inf"))
    observe(sampler, 1, float("nan"))
    np.testing.assert_allclose(sampler.loss_estimates.numpy(), [1.0, 2.0])
    p = sampler.update()
    assert torch.isfinite(p).all()
    np.testing.assert_allclose(p.numpy(), np_softmax(np.array([1.0, 2.0])), rtol=1e-12)
