"""Tests of the two regularizers of docs/method.md, section 3 against independent references.

* ``js_structural_loss`` against SciPy's Jensen-Shannon distance (squared, natural log) and
  against closed forms (one-hot distributions: JS = ln 2);
* ``batch_hard_triplet_loss`` against a hand-worked 2-D example and a brute-force Python loop.
"""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax as np_softmax

from mdnas_fairseq.search import batch_hard_triplet_loss, js_structural_loss


# ------------------------------------------------------------------------- structural loss
def _js_reference(alpha: np.ndarray) -> float:
    """docs/method.md: 1/(D(D-1)) sum_edges sum_d sum_{d' != d} JS(P_d(e) || P_d'(e)), JS in nats.

    scipy's ``jensenshannon`` is the Jensen-Shannon *distance* (square root of the divergence),
    natural log by default, so it is squared here.
    """
    D, E, _ = alpha.shape
    probs = np_softmax(alpha, axis=-1)
    total = 0.0
    for e in range(E):
        for d in range(D):
            for d2 in range(D):
                if d2 != d:
                    total += jensenshannon(probs[d, e], probs[d2, e]) ** 2
    return total / (D * (D - 1))


@pytest.mark.parametrize("num_domains", [2, 3, 5])
def test_js_matches_scipy_on_random_alphas(num_domains):
    gen = np.random.default_rng(1000 + num_domains)
    for scale in (0.3, 2.0, 6.0):
        alpha = gen.normal(scale=scale, size=(num_domains, 4, 5))
        got = js_structural_loss(torch.tensor(alpha, dtype=torch.float64))
        expected = _js_reference(alpha)
        assert got.dtype == torch.float64 and got.dim() == 0
        assert expected > 1e-4  # the domains really differ, so this is not a 0 == 0 comparison
        assert float(got) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_js_is_bounded_by_ln2_and_zero_for_identical_domains():
    gen = torch.Generator().manual_seed(0)
    row = torch.randn(1, 3, 4, generator=gen, dtype=torch.float64)
    same = row.repeat(3, 1, 1)
    assert float(js_structural_loss(same)) == pytest.approx(0.0, abs=1e-15)
    # A constant shift of one domain's logits does not change its softmax, so the loss stays 0.
    shifted = same.clone()
    shifted[1] += 7.0
    assert float(js_structural_loss(shifted)) == pytest.approx(0.0, abs=1e-12)


def test_js_single_domain_is_exactly_zero_with_zero_finite_gradient():
    alpha = torch.randn(1, 6, 5, dtype=torch.float64, requires_grad=True)
    loss = js_structural_loss(alpha)
    assert float(loss.detach()) == 0.0 and not torch.isnan(loss.detach())
    assert loss.requires_grad  # still attached: adding it to a loss never breaks backward
    loss.backward()
    assert alpha.grad is not None
    assert torch.equal(alpha.grad, torch.zeros_like(alpha))


def test_js_gradient_matches_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    for num_domains in (2, 3):
        alpha = torch.randn(
            num_domains, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True
        )
        assert torch.autograd.gradcheck(
            js_structural_loss, (alpha,), eps=1e-6, atol=1e-7, rtol=1e-5
        )
        loss = js_structural_loss(alpha)
        (grad,) = torch.autograd.grad(loss, alpha)
        assert grad.abs().max() > 1e-3  # the gradient is not trivially zero


def test_js_one_hot_closed_form_and_extreme_alphas_have_no_nan():
    # With +-1e4 logits the softmax is one-hot to float64 precision (exp(-1e4) underflows to 0).
    # Two domains picking different ops on an edge: M = (1/2, 1/2, 0), KL(P_d || M) = ln 2 each,
    # so JS = 1/2 ln2 + 1/2 ln2 = ln 2; the loss is 1/(2*1) * (JS(0||1) + JS(1||0)) = ln 2 per
    # such edge. A second edge where both domains pick op 2 contributes 0.
    big = 1e4
    alpha = torch.tensor(
        [
            [[big, -big, 0.0], [-big, -big, big]],
            [[-big, big, 0.0], [-big, -big, big]],
        ],
        dtype=torch.float64,
        requires_grad=True,
    )
    loss = js_structural_loss(alpha)
    assert float(loss.detach()) == pytest.approx(math.log(2.0), rel=1e-12)
    loss.backward()
    assert torch.isfinite(alpha.grad).all()

    # Random extreme logits, 3 domains, float32 and float64: finite value and gradient, and the
    # value still agrees with SciPy (which handles the exact zeros of the probabilities).
    gen = np.random.default_rng(7)
    raw = gen.choice([-1e4, 0.0, 1e4], size=(3, 5, 4)) + gen.normal(size=(3, 5, 4))
    for dtype in (torch.float64, torch.float32):
        a = torch.tensor(raw, dtype=dtype, requires_grad=True)
        value = js_structural_loss(a)
        assert torch.isfinite(value)
        value.backward()
        assert torch.isfinite(a.grad).all()
        tol = 1e-9 if dtype == torch.float64 else 1e-4
        assert float(value.detach()) == pytest.approx(_js_reference(raw), rel=tol, abs=tol)


def test_js_rejects_wrong_shape():
    with pytest.raises(ValueError):
        js_structural_loss(torch.zeros(3, 4))


# ---------------------------------------------------------------------------- triplet loss
def test_triplet_hand_worked_example():
    # Anchors (rows of h_a) and candidates (rows of h_b), margin 1:
    #   b0 = (0, 3) label 0    b1 = (4, 0) label 0    b2 = (1, 0) label 1
    #   b3 = (0, 1) label 1    b4 = (10, 10) label 3
    # a0 = (0, 0), label 0: positives b0 at 3, b1 at 4 -> hardest positive 4
    #                       negatives b2 at 1, b3 at 1, b4 at sqrt(200) -> hardest negative 1
    #                       loss = max(0, 1 + 4 - 1) = 4
    # a1 = (3, 0), label 1: positives b2 at 2, b3 at sqrt(9 + 1) = sqrt(10) -> hardest sqrt(10)
    #                       negatives b0 at sqrt(18), b1 at 1, b4 at sqrt(49 + 100) -> hardest 1
    #                       loss = max(0, 1 + sqrt(10) - 1) = sqrt(10)
    # a2 = (0, 4), label 2: no row of h_b has label 2 -> no positive -> excluded from the mean
    # a3 = (10, 9), label 3: positive b4 at 1; negatives b0 at sqrt(100 + 36), b1 at sqrt(36 + 81),
    #                       b2 at sqrt(81 + 81), b3 at sqrt(100 + 64) -> hardest sqrt(117) ~ 10.82
    #                       loss = max(0, 1 + 1 - 10.82) = 0
    # mean over the 3 valid anchors = (4 + sqrt(10) + 0) / 3
    h_a = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [10.0, 9.0]], dtype=torch.float64)
    labels_a = torch.tensor([0, 1, 2, 3])
    h_b = torch.tensor(
        [[0.0, 3.0], [4.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]], dtype=torch.float64
    )
    labels_b = torch.tensor([0, 0, 1, 1, 3])
    loss = batch_hard_triplet_loss(h_a, labels_a, h_b, labels_b, margin=1.0)
    assert float(loss) == pytest.approx((4.0 + math.sqrt(10.0) + 0.0) / 3.0, rel=1e-12)

    # With margin 0.5 only the margin term changes: (3.5 + (sqrt(10) - 0.5) + 0) / 3.
    loss = batch_hard_triplet_loss(h_a, labels_a, h_b, labels_b, margin=0.5)
    assert float(loss) == pytest.approx((3.5 + math.sqrt(10.0) - 0.5) / 3.0, rel=1e-12)

    # Only a2 and a0: a2 is excluded, so the mean is over a0 alone: 4.
    loss = batch_hard_triplet_loss(h_a[[0, 2]], labels_a[[0, 2]], h_b, labels_b, margin=1.0)
    assert float(loss) == pytest.approx(4.0, rel=1e-12)


def _triplet_brute_force(h_a, labels_a, h_b, labels_b, margin):
    """Plain Python loops: batch-hard triplet loss with anchors from a, positives/negatives from b."""
    losses = []
    for i in range(len(h_a)):
        pos, neg = [], []
        for j in range(len(h_b)):
            dist = math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(h_a[i], h_b[j])))
            (pos if int(labels_a[i]) == int(labels_b[j]) else neg).append(dist)
        if pos and neg:
            losses.append(max(0.0, margin + max(pos) - min(neg)))
    return sum(losses) / len(losses) if losses else 0.0


def _triplet_torch_loop(h_a, labels_a, h_b, labels_b, margin):
    """Second differentiable code path (per-anchor loops) for comparing gradients."""
    losses = []
    for i in range(h_a.shape[0]):
        same = labels_b == labels_a[i]
        if same.any() and (~same).any():
            d = (h_a[i][None, :] - h_b).pow(2).sum(-1).sqrt()
            losses.append(torch.relu(margin + d[same].max() - d[~same].min()))
    return torch.stack(losses).mean()


def test_triplet_matches_brute_force_on_random_data():
    gen = torch.Generator().manual_seed(11)
    for trial in range(20):
        n, m, h = 3 + trial % 5, 2 + trial % 7, 1 + trial % 4
        num_labels = 2 + trial % 3
        h_a = torch.randn(n, h, generator=gen, dtype=torch.float64)
        h_b = torch.randn(m, h, generator=gen, dtype=torch.float64)
        labels_a = torch.randint(
            0, num_labels + 1, (n,), generator=gen
        )  # label num_labels may miss in b
        labels_b = torch.randint(0, num_labels, (m,), generator=gen)
        margin = [0.1, 1.0, 3.0][trial % 3]
        got = batch_hard_triplet_loss(h_a, labels_a, h_b, labels_b, margin=margin)
        expected = _triplet_brute_force(h_a, labels_a, h_b, labels_b, margin)
        assert float(got) == pytest.approx(expected, rel=1e-10, abs=1e-12), trial


def test_triplet_gradient_matches_loop_implementation():
    gen = torch.Generator().manual_seed(12)
    h_a = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    h_b = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    labels_a = torch.tensor([0, 1, 2, 0, 1, 5])  # label 5: no positive in b
    labels_b = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    a1, b1 = h_a.clone().requires_grad_(True), h_b.clone().requires_grad_(True)
    a2, b2 = h_a.clone().requires_grad_(True), h_b.clone().requires_grad_(True)
    loss = batch_hard_triplet_loss(a1, labels_a, b1, labels_b, margin=2.0)
    ref = _triplet_torch_loop(a2, labels_a, b2, labels_b, margin=2.0)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    assert float(loss.detach()) > 0  # some triplets are active, so gradients are not trivially zero
    loss.backward()
    ref.backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-10, atol=1e-12)
    assert a1.grad[5].abs().max() == 0  # the excluded anchor gets no gradient
    assert torch.isfinite(a1.grad).all() and torch.isfinite(b1.grad).all()


@pytest.mark.parametrize(
    "labels_a, labels_b",
    [
        ([0, 0, 0], [0, 0]),  # every anchor has a positive but no negative
        ([1, 2, 3], [0, 0]),  # no anchor has a positive
        ([0, 1, 1], [0, 0]),  # anchor 0: no negative; anchors 1, 2: no positive
    ],
)
def test_triplet_without_valid_triplet_is_attached_zero(labels_a, labels_b):
    gen = torch.Generator().manual_seed(5)
    h_a = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    h_b = torch.randn(2, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = batch_hard_triplet_loss(
        h_a, torch.tensor(labels_a), h_b, torch.tensor(labels_b), margin=1.0
    )
    assert float(loss.detach()) == 0.0
    assert loss.requires_grad and loss.grad_fn is not None
    (loss * 3.0 + h_a.sum()).backward()
    assert torch.equal(h_a.grad, torch.ones_like(h_a))  # the zero loss contributes a zero gradient
    assert h_b.grad is not None and torch.equal(h_b.grad, torch.zeros_like(h_b))


def test_triplet_coincident_points_have_finite_gradient():
    # Distances of exactly 0 (an anchor equal to its positive, the cross-lingual ideal) must not
    # produce NaN gradients through the square root.
    h = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    h_a = h.clone().requires_grad_(True)
    h_b = h.clone().requires_grad_(True)
    labels = torch.tensor([0, 0, 1])
    loss = batch_hard_triplet_loss(h_a, labels, h_b, labels, margin=10.0)
    # anchor 0: positives b0, b1 both at 0 -> d_pos 0; negative b2 at sqrt(4 + 9) -> 10 - sqrt(13)
    # anchor 1: the same; anchor 2: positive b2 at 0, nearest negative at sqrt(13) -> 10 - sqrt(13)
    # (the distance has a floor of sqrt(1e-12) = 1e-6 that keeps the sqrt gradient finite)
    assert float(loss.detach()) == pytest.approx(10.0 - math.sqrt(13.0), abs=1e-5)
    loss.backward()
    assert torch.isfinite(h_a.grad).all() and torch.isfinite(h_b.grad).all()


def test_triplet_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        batch_hard_triplet_loss(
            torch.zeros(3, 2), torch.zeros(3), torch.zeros(2, 3), torch.zeros(2)
        )
    with pytest.raises(ValueError):
        batch_hard_triplet_loss(
            torch.zeros(3, 2), torch.zeros(2), torch.zeros(2, 2), torch.zeros(2)
        )
