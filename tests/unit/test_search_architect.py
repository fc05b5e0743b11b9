"""Tests of ``BilevelArchitect`` (docs/method.md, section 2: first order and DARTS second order).

The reference for the second-order step is the EXACT hypergradient
``d/d alpha  L_val(w - xi * grad_w L_train(w, alpha), alpha)`` computed by torch autograd through
the unrolled step (double backward, ``create_graph=True``) on a functional copy of the model
written independently of ``mix`` / ``ArchitectureParameters``.
"""

import io

import pytest
import torch

from mdnas_fairseq.search import (
    BilevelArchitect,
    SGDVirtualStep,
    architecture_parameters,
    weight_parameters,
)
from mdnas_fairseq.search.virtual_step import ClippedVirtualStep
from tests.helpers.tiny_net import (  # noqa: F401
    NUM_DOMAINS,
    NUM_EDGES,
    TRAIN,
    VAL,
    K,
    closures,
    dropout_mask,
    make_batch,
    make_model,
    ref_loss,
    reference_forward,
)


def make_architect(model, **kw):
    # as a fairseq task does it: the weights are what the trainer optimizes
    weights = [p for p in model.parameters() if p.requires_grad]
    return BilevelArchitect(weights, architecture_parameters(model), **kw)


def exact_hypergradient(model, xi, weight_decay=0.0, momentum=0.0, buffers=None, clip=1.0):
    """d/d alpha L_val(w', alpha), w' = w - xi (clip grad_w L_train + wd w + momentum buf), by
    autograd; ``clip`` a constant (the clip coefficient, whose own dependence on alpha is left out)."""
    alpha = model.alphas.alpha.detach().clone().requires_grad_(True)
    ws = [model.w1, model.w2, model.w3]
    ws = [w.detach().clone().requires_grad_(True) for w in ws]
    grads = torch.autograd.grad(ref_loss(ws, alpha, TRAIN), ws, create_graph=True)
    grads = [clip * g for g in grads]
    if buffers is None:
        buffers = [torch.zeros_like(w) for w in ws]
    w_virtual = [
        w - xi * (g + weight_decay * w + momentum * b) for w, g, b in zip(ws, grads, buffers)
    ]
    val = ref_loss(w_virtual, alpha, VAL)
    (exact,) = torch.autograd.grad(val, alpha)
    # the first-order gradient at the virtual weights, i.e. without the Hessian term
    alpha2 = alpha.detach().clone().requires_grad_(True)
    (at_virtual,) = torch.autograd.grad(
        ref_loss([w.detach() for w in w_virtual], alpha2, VAL), alpha2
    )
    return exact, at_virtual, [w.detach() for w in w_virtual], float(val.detach())


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------ the reference itself
def test_reference_network_equals_model():
    model = make_model()
    x, d, _ = VAL
    ref = reference_forward([model.w1, model.w2, model.w3], model.alphas.alpha, x, d)
    torch.testing.assert_close(model(x, d), ref, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("xi", [0.5, 1.0])
def test_second_order_gradient_equals_exact_unrolled_gradient(xi):
    model = make_model()
    architect = make_architect(model, order=2)
    train_loss, val_loss = closures(model)
    got = architect.alpha_gradients(train_loss, val_loss, virtual_step=SGDVirtualStep(lr=xi))[
        "grads"
    ]
    assert len(got) == 1 and got[0].shape == (NUM_DOMAINS, NUM_EDGES, K)
    exact, at_virtual, _, _ = exact_hypergradient(model, xi)
    assert rel_err(got[0], exact) < 1e-3

    # The Hessian term is far from negligible in this setup: dropping it, or doubling it (a
    # finite difference divided by eps instead of 2 eps), misses by >> the 1e-3 tolerance.
    hessian_term = exact - at_virtual
    assert float(hessian_term.norm() / exact.norm()) > 0.1
    assert rel_err(at_virtual + 2 * hessian_term, exact) > 0.1
    # and it differs from the first-order gradient at w by much more than the tolerance
    first = make_architect(model, order=1).alpha_gradients(
        train_loss, val_loss, virtual_step=SGDVirtualStep(lr=xi)
    )["grads"][0]
    assert rel_err(first, exact) > 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_difference_equals_exact_gradient_with_one_training_pass_fewer(seed):
    model = make_model(seed=seed)
    train_loss, val_loss = closures(model)
    calls = {"train": 0}

    def counted_train_loss():
        calls["train"] += 1
        return train_loss()

    exact, at_virtual, _, _ = exact_hypergradient(model, 0.5)
    errors = {}
    for difference, passes in (("central", 3), ("forward", 2)):
        calls["train"] = 0
        got = make_architect(model, order=2, difference=difference).alpha_gradients(
            counted_train_loss, val_loss, virtual_step=SGDVirtualStep(lr=0.5)
        )["grads"][0]
        errors[difference] = rel_err(got, exact)
        assert calls["train"] == passes, difference
    # O(eps^2) vs O(eps) with eps = 0.01 / ||u||: both near the exact hypergradient, whose
    # Hessian term is large here (a forward difference divided by 2 eps, or taken from the wrong
    # base point, misses by tens of percent)
    assert float((exact - at_virtual).norm() / exact.norm()) > 0.3
    assert errors["central"] < 1e-4
    assert errors["forward"] < 2e-2


DROP = 0.4


@pytest.mark.parametrize("difference", ["central", "forward"])
def test_second_order_with_dropout_differentiates_one_draw_of_the_masks(difference):
    # The finite difference must compare training gradients under the SAME dropout masks (those
    # of the virtual step's pass); with fresh masks at w +- eps u it would divide the difference of
    # two random draws by eps. Reference: the exact unrolled hypergradient with the masks the
    # architect's first training pass and its held-out pass drew, replayed from the seed.
    model = make_model(seed=4, dropout=DROP)
    xi = 0.5
    train_loss, val_loss = closures(model)
    architect = make_architect(model, order=2, difference=difference)
    torch.manual_seed(123)
    got = architect.alpha_gradients(train_loss, val_loss, virtual_step=SGDVirtualStep(lr=xi))[
        "grads"
    ][0]
    after = torch.rand(())  # the global stream continues after the two passes that drew masks

    torch.manual_seed(123)
    shape = (TRAIN[0].shape[0], model.w1.shape[1])
    train_mask = dropout_mask(shape, torch.float64, DROP)
    val_mask = dropout_mask(shape, torch.float64, DROP)
    following = torch.rand(())
    alpha = model.alphas.alpha.detach().clone().requires_grad_(True)
    ws = [w.detach().clone().requires_grad_(True) for w in (model.w1, model.w2, model.w3)]
    grads = torch.autograd.grad(ref_loss(ws, alpha, TRAIN, train_mask), ws, create_graph=True)
    virtual = [w - xi * g for w, g in zip(ws, grads)]
    (exact,) = torch.autograd.grad(ref_loss(virtual, alpha, VAL, val_mask), alpha)
    assert rel_err(got, exact) < (1e-4 if difference == "central" else 2e-2)
    assert torch.equal(following, after)


def training_gradient_norm(model):
    ws = [w.detach().clone().requires_grad_(True) for w in (model.w1, model.w2, model.w3)]
    grads = torch.autograd.grad(ref_loss(ws, model.alphas.alpha.detach(), TRAIN), ws)
    return float(torch.sqrt(sum((g * g).sum() for g in grads)))


@pytest.mark.parametrize("difference", ["central", "forward"])
def test_clipped_second_order_gradient_equals_exact_gradient_with_constant_clip_coefficient(
    difference,
):
    # --clip-norm: w' = w - xi c g with c = max_norm / (||g|| + 1e-6) (fairseq's coefficient) held
    # constant, as DARTS' recurrent architect holds it; the Jacobian of the update carries c
    model = make_model(seed=1)
    xi = 0.5
    norm = training_gradient_norm(model)
    max_norm = 0.25 * norm  # the batch's gradient norm is above the threshold
    clip = max_norm / (norm + 1e-6)
    architect = make_architect(model, order=2, difference=difference)
    train_loss, val_loss = closures(model)
    step = ClippedVirtualStep(SGDVirtualStep(lr=xi), max_norm)
    out = architect.alpha_gradients(train_loss, val_loss, virtual_step=step)
    exact, _, _, val_at_virtual = exact_hypergradient(model, xi, clip=clip)
    assert rel_err(out["grads"][0], exact) < (1e-4 if difference == "central" else 2e-2)
    assert float(out["val_loss"]) == pytest.approx(val_at_virtual, rel=1e-10)
    # the clipped point and gradient are another than the unclipped ones
    unclipped, _, _, val_unclipped = exact_hypergradient(model, xi)
    assert rel_err(unclipped, exact) > 0.05
    assert abs(val_unclipped - val_at_virtual) > 1e-3
    # a threshold above the norm is no clipping at all, bit for bit
    loose = ClippedVirtualStep(SGDVirtualStep(lr=xi), 2 * norm)
    assert torch.equal(
        architect.alpha_gradients(train_loss, val_loss, virtual_step=loose)["grads"][0],
        architect.alpha_gradients(train_loss, val_loss, virtual_step=SGDVirtualStep(lr=xi))[
            "grads"
        ][0],
    )


def test_second_order_with_momentum_and_weight_decay_in_virtual_step():
    # DARTS' virtual step uses the weight optimizer's momentum buffer and weight decay:
    # w' = w - xi * (momentum * buf + grad_w L_train + wd * w).
    model = make_model(seed=3)
    architect = make_architect(model, order=2)
    gen = torch.Generator().manual_seed(9)
    weights = [p for p in model.parameters() if p.requires_grad]
    buffers = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in weights]
    xi, momentum, wd = 0.5, 0.9, 0.03
    train_loss, val_loss = closures(model)
    out = architect.alpha_gradients(
        train_loss,
        val_loss,
        virtual_step=SGDVirtualStep(lr=xi, momentum=momentum, weight_decay=wd, buffers=buffers),
    )
    exact, _, w_virtual, val_at_virtual = exact_hypergradient(model, xi, wd, momentum, buffers)
    assert rel_err(out["grads"][0], exact) < 1e-3
    assert float(out["val_loss"]) == pytest.approx(val_at_virtual, rel=1e-12)
    # without the buffers the virtual point is different, and so is the loss
    plain = architect.alpha_gradients(train_loss, val_loss, virtual_step=SGDVirtualStep(lr=xi))
    assert abs(float(plain["val_loss"]) - val_at_virtual) > 1e-4


def test_virtual_step_really_moves_the_weights():
    model = make_model()
    architect = make_architect(model, order=2)
    train_loss, val_loss = closures(model)
    xi = 0.5
    out = architect.alpha_gradients(train_loss, val_loss, virtual_step=SGDVirtualStep(lr=xi))
    # hand-computed virtual weights w' = w - xi * grad_w L_train(w, alpha)
    ws = [
        model.w1.detach().clone().requires_grad_(True),
        model.w2.detach().clone().requires_grad_(True),
        model.w3.detach().clone().requires_grad_(True),
    ]
    alpha = model.alphas.alpha.detach()
    grads = torch.autograd.grad(ref_loss(ws, alpha, TRAIN), ws)
    w_virtual = [w.detach() - xi * g for w, g in zip(ws, grads)]
    val_at_w = float(ref_loss([w.detach() for w in ws], alpha, VAL))
    val_at_virtual = float(ref_loss(w_virtual, alpha, VAL))
    assert abs(val_at_w - val_at_virtual) > 1e-3
    assert float(out["val_loss"]) == pytest.approx(val_at_virtual, rel=1e-12)
    # first order reports the loss at w
    first = make_architect(model, order=1).alpha_gradients(
        train_loss, val_loss, virtual_step=SGDVirtualStep(lr=xi)
    )
    assert float(first["val_loss"]) == pytest.approx(val_at_w, rel=1e-12)


def test_first_order_gradient_equals_grad_of_val_loss():
    model = make_model(seed=1)
    architect = make_architect(model, order=1)
    train_calls = []

    def train_loss():
        train_calls.append(1)
        return closures(model)[0]()

    out = architect.alpha_gradients(
        train_loss, closures(model)[1], virtual_step=SGDVirtualStep(lr=0.5)
    )
    alpha = model.alphas.alpha.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(ref_loss([model.w1, model.w2, model.w3], alpha, VAL), alpha)
    torch.testing.assert_close(out["grads"][0], expected, rtol=1e-10, atol=1e-14)
    assert float(out["val_loss"]) == pytest.approx(
        float(ref_loss([model.w1, model.w2, model.w3], alpha, VAL).detach())
    )
    assert not train_calls  # first order never evaluates the training loss


# ------------------------------------------------------------------------------ the update
def test_step_restores_weights_bitwise_changes_alpha_and_is_adam():
    model = make_model(seed=2)
    architect = make_architect(model, order=2)
    train_loss, val_loss = closures(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    xi = 0.5
    grad = architect.alpha_gradients(train_loss, val_loss, virtual_step=SGDVirtualStep(lr=xi))[
        "grads"
    ][0]
    for p in weight_parameters(model):
        assert p.grad is None

    result = architect.step(train_loss, val_loss, virtual_step=SGDVirtualStep(lr=xi))
    assert (
        set(result) == {"alpha_loss"}
        and torch.is_tensor(result["alpha_loss"])
        and result["alpha_loss"].dim() == 0
    )
    for name, p in model.named_parameters():
        if name == "alphas.alpha":
            assert not torch.equal(p, before[name])
        else:
            assert torch.equal(p, before[name]), name  # bitwise identical
            assert p.grad is None  # the trainer's gradient accumulators are untouched
    assert not model.alphas.alpha.requires_grad
    assert model.alphas.alpha.grad is None

    # The first Adam step by hand: g' = g + wd * alpha, m_hat = g', v_hat = g'^2,
    # alpha <- alpha - lr * m_hat / (sqrt(v_hat) + 1e-8) = alpha - lr * g' / (|g'| + 1e-8).
    lr, wd = 3e-4, 1e-3
    g = grad + wd * before["alphas.alpha"]
    expected = before["alphas.alpha"] - lr * g / (g.abs() + 1e-8)
    torch.testing.assert_close(model.alphas.alpha.detach(), expected, rtol=1e-10, atol=1e-13)


def test_default_optimizer_is_adam_with_darts_settings():
    model = make_model()
    architect = make_architect(model)
    opt = architect.optimizer
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert tuple(group["betas"]) == (0.5, 0.999)
    assert group["weight_decay"] == pytest.approx(1e-3)
    assert group["lr"] == pytest.approx(3e-4)
    assert [id(p) for p in group["params"]] == [id(model.alphas.alpha)]
    assert architect.order == 1


def test_state_dict_round_trip_gives_identical_steps():
    def run_steps(model, architect, n):
        train_loss, val_loss = closures(model)
        for _ in range(n):
            architect.step(train_loss, val_loss, virtual_step=SGDVirtualStep(lr=0.5))

    model_a = make_model(seed=4)
    arch_a = make_architect(model_a, order=2, lr=0.05)
    run_steps(model_a, arch_a, 3)
    buf = io.BytesIO()
    torch.save({"model": model_a.state_dict(), "architect": arch_a.state_dict()}, buf)
    run_steps(model_a, arch_a, 3)

    buf.seek(0)
    saved = torch.load(buf)
    model_b = make_model(seed=5)  # different initial weights and alpha, all overwritten
    model_b.load_state_dict(saved["model"])
    arch_b = make_architect(model_b, order=2, lr=0.05)
    arch_b.load_state_dict(saved["architect"])
    run_steps(model_b, arch_b, 3)
    assert torch.equal(model_a.alphas.alpha, model_b.alphas.alpha)

    # without the optimizer state (fresh Adam moments) the steps differ: the check can fail
    model_c = make_model(seed=5)
    model_c.load_state_dict(saved["model"])
    arch_c = make_architect(model_c, order=2, lr=0.05)
    run_steps(model_c, arch_c, 3)
    assert not torch.allclose(model_a.alphas.alpha, model_c.alphas.alpha, rtol=0, atol=1e-6)


def test_step_leaves_accumulated_weight_gradients_alone():
    # fairseq may hold accumulated weight gradients while the alpha step runs.
    model = make_model()
    architect = make_architect(model, order=2)
    gen = torch.Generator().manual_seed(4)
    for p in weight_parameters(model):
        p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
    grads_before = [p.grad.clone() for p in weight_parameters(model)]
    architect.step(*closures(model), virtual_step=SGDVirtualStep(lr=0.5))
    for p, g in zip(weight_parameters(model), grads_before):
        assert torch.equal(p.grad, g)


def test_weights_restored_when_a_loss_raises():
    model = make_model()
    architect = make_architect(model, order=2)
    train_loss, _ = closures(model)
    before = [p.detach().clone() for p in weight_parameters(model)]

    def failing_val_loss():
        raise RuntimeError("out of memory (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        architect.step(train_loss, failing_val_loss, virtual_step=SGDVirtualStep(lr=0.5))
    for p, b in zip(weight_parameters(model), before):
        assert torch.equal(p, b)
    assert not model.alphas.alpha.requires_grad


def test_apply_gradients_uses_the_given_gradients():
    # the fairseq glue reduces the gradients over workers between alpha_gradients and apply_gradients
    model = make_model()
    architect = make_architect(model, order=1, weight_decay=0.0)
    train_loss, val_loss = closures(model)
    grads = architect.alpha_gradients(train_loss, val_loss)["grads"]
    assert float(grads[0].abs().max()) > 0
    before = model.alphas.alpha.detach().clone()
    architect.apply_gradients([torch.zeros_like(g) for g in grads])  # e.g. a reduction that gave 0
    # zero gradient, no decay: Adam leaves alpha where it was
    assert torch.equal(model.alphas.alpha, before)
    architect.apply_gradients(grads)
    assert not torch.equal(model.alphas.alpha, before)


def test_second_order_needs_the_weight_optimizer_rule():
    model = make_model()
    architect = make_architect(model, order=2)
    with pytest.raises(ValueError, match="virtual step"):
        architect.alpha_gradients(*closures(model))


# ------------------------------------------------------------------- parameter separation
def test_alpha_is_hidden_from_weight_optimizers():
    model = make_model()
    trainable = list(filter(lambda p: p.requires_grad, model.parameters()))
    assert all(p is not model.alphas.alpha for p in trainable)
    assert len(trainable) == 3
    assert [id(p) for p in weight_parameters(model)] == [id(model.w1), id(model.w2), id(model.w3)]
    assert [id(p) for p in architecture_parameters(model)] == [id(model.alphas.alpha)]
    # alpha is still a registered parameter: saved with the model
    assert "alphas.alpha" in model.state_dict()
    assert not model.alphas.alpha.requires_grad


def test_constructor_rejects_bad_arguments():
    model = make_model()
    with pytest.raises(ValueError):
        BilevelArchitect(
            list(model.parameters()), architecture_parameters(model)
        )  # alpha among weights
    with pytest.raises(ValueError):
        BilevelArchitect(weight_parameters(model), architecture_parameters(model), order=3)
    with pytest.raises(ValueError):
        BilevelArchitect(weight_parameters(model), [])
