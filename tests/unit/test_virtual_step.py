"""Second-order search with the weight optimizer's own rule (fairseq's sgd, nag and adam).

References, independent of ``mdnas_fairseq.search.virtual_step``:
* the virtual weights equal what the REAL fairseq optimizer's ``step()`` makes of the same gradient,
  from the same state (a deep copy of model and optimizer takes the step);
* the alpha gradient equals torch autograd through the unrolled step, written here as a
  differentiable function of alpha (double backward through the training gradient) and itself
  checked against the real optimizer's step.
"""

import argparse
import copy
import math

import pytest
import torch
from fairseq import utils as fairseq_utils
from fairseq.optim.adam import FairseqAdam
from fairseq.optim.nag import FairseqNAG
from fairseq.optim.sgd import SGD as FairseqSGD
from omegaconf import OmegaConf

from mdnas_fairseq.search import BilevelArchitect, SGDVirtualStep, architecture_parameters
from mdnas_fairseq.tasks.bilevel.optimizers import virtual_step_for
from tests.helpers.tiny_net import TRAIN, VAL, closures, make_batch, make_model, ref_loss


class TorchSGDWrapper:
    """A fairseq-like optimizer around torch's SGD with Nesterov momentum (fairseq's sgd has none)."""

    def __init__(self, params, **kw):
        self.optimizer = torch.optim.SGD(params, **kw)

    def backward(self, loss):
        loss.backward()

    def step(self):
        self.optimizer.step()

    def zero_grad(self):
        self.optimizer.zero_grad()


def make_optimizer(kind, params):
    if kind == "sgd":
        return FairseqSGD(argparse.Namespace(lr=[0.4], momentum=0.9, weight_decay=0.03), params)
    if kind == "sgd_nesterov":
        return TorchSGDWrapper(
            params, lr=0.4, momentum=0.8, dampening=0.0, nesterov=True, weight_decay=0.03
        )
    if kind == "nag":
        return FairseqNAG(
            OmegaConf.create({"lr": [0.3], "momentum": 0.9, "weight_decay": 0.02}), params
        )
    if kind == "adam":
        return FairseqAdam(
            OmegaConf.create(
                {
                    "lr": [0.05],
                    "adam_betas": "(0.9, 0.98)",
                    "adam_eps": 1e-6,
                    "weight_decay": 0.01,
                    "use_old_adam": True,
                    "fp16_adam_stats": False,
                    "tpu": False,
                }
            ),
            params,
        )
    raise KeyError(kind)


def unrolled(kind, opt, ws, grads):
    """The optimizer's next step as a differentiable function (written from the optimizers' docs)."""
    inner = opt.optimizer
    group = inner.param_groups[0]
    lr, wd = group["lr"], group["weight_decay"]
    out = []
    for w, g in zip(ws, grads):
        state = inner.state.get(w, {})
        if kind in ("sgd", "sgd_nesterov"):
            m = group["momentum"]
            d = g + wd * w
            buf = state.get("momentum_buffer")
            buf = d if buf is None else m * buf + (1 - group["dampening"]) * d
            out.append(w - lr * (d + m * buf if group["nesterov"] else buf))
        elif kind == "nag":
            m = group["momentum"]
            lr_correct = lr / group.get("lr_old", lr)
            out.append(
                w * (1 - lr * wd) + m * m * lr_correct * state["momentum_buffer"] - (1 + m) * lr * g
            )
        else:
            b1, b2 = group["betas"]
            t = state["step"] + 1
            m1 = b1 * state["exp_avg"] + (1 - b1) * g
            v1 = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
            step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            out.append(w * (1 - lr * wd) - step_size * m1 / (v1.sqrt() + group["eps"]))
    return out


def warmed_up(kind, seed=0, steps=3, dtype=torch.float64):
    """A model and its fairseq optimizer after a few real steps (so momentum/moments are non-zero)."""
    model = make_model(seed).to(dtype)
    weights = [model.w1, model.w2, model.w3]
    opt = make_optimizer(kind, weights)
    for k in range(steps):
        x, d, y = cast(make_batch(500 + k), dtype)
        opt.zero_grad()
        opt.backward(torch.nn.functional.mse_loss(model(x, d), y))
        opt.step()
    return model, weights, opt


def cast(batch, dtype):
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in batch)


def hypergradient(kind, model, weights, opt):
    """d/d alpha L_val(w'(alpha), alpha) by autograd through the unrolled step."""
    alpha = model.alphas.alpha.detach().clone().requires_grad_(True)
    grads = torch.autograd.grad(ref_loss(weights, alpha, TRAIN), weights, create_graph=True)
    w_virtual = unrolled(kind, opt, weights, grads)
    (exact,) = torch.autograd.grad(ref_loss(w_virtual, alpha, VAL), alpha)
    return exact, [w.detach() for w in w_virtual]


def real_step(model, opt, kind):
    """The weights after the real optimizer's step on grad_w L_train (on copies, same state)."""
    model2 = copy.deepcopy(model)
    ws = [model2.w1, model2.w2, model2.w3]
    opt2 = make_optimizer(kind, ws)
    opt2.optimizer.load_state_dict(copy.deepcopy(opt.optimizer.state_dict()))
    grads = torch.autograd.grad(ref_loss(ws, model2.alphas.alpha.detach(), TRAIN), ws)
    for w, g in zip(ws, grads):
        w.grad = g.clone()
    opt2.step()
    return [w.detach() for w in ws]


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kind", ["sgd", "sgd_nesterov", "nag", "adam"])
def test_virtual_step_is_the_real_optimizer_step(kind):
    tol = (
        1e-6 if kind == "nag" else 1e-12
    )  # fairseq's NAG computes in float32 even for float64 weights
    model, weights, opt = warmed_up(kind)
    before = copy.deepcopy(([w.detach() for w in weights], opt.optimizer.state_dict()))
    want = real_step(model, opt, kind)
    # the test's own unrolled step is the real one
    _, w_unrolled = hypergradient(kind, model, weights, opt)
    for a, b in zip(w_unrolled, want):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * 1e-2)
    # and so is the virtual step the glue reads from the optimizer
    virtual = virtual_step_for(opt, weights)
    grads = torch.autograd.grad(ref_loss(weights, model.alphas.alpha.detach(), TRAIN), weights)
    copies = [w.detach().clone() for w in weights]
    virtual.apply(copies, grads)
    for a, b in zip(copies, want):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * 1e-2)
    # reading the rule changed nothing: neither the weights nor the optimizer's state
    assert all(torch.equal(w, b) for w, b in zip(weights, before[0]))
    for a, b in zip(opt.optimizer.state_dict()["state"].values(), before[1]["state"].values()):
        for key in b:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key


@pytest.mark.parametrize("kind", ["sgd", "sgd_nesterov", "nag", "adam"])
def test_second_order_gradient_equals_autograd_through_the_optimizer_step(kind):
    model, weights, opt = warmed_up(kind)
    exact, _ = hypergradient(kind, model, weights, opt)
    architect = BilevelArchitect(weights, architecture_parameters(model), order=2)
    got = architect.alpha_gradients(*closures(model), virtual_step=virtual_step_for(opt, weights))[
        "grads"
    ][0]
    assert rel_err(got, exact) < 1e-3
    # the rule matters: a plain SGD step at the optimizer's learning rate (what DARTS code does) is far off
    lr = opt.optimizer.param_groups[0]["lr"]
    plain = architect.alpha_gradients(*closures(model), virtual_step=SGDVirtualStep(lr=lr))[
        "grads"
    ][0]
    assert rel_err(plain, exact) > 0.02


def test_adam_virtual_step_at_the_first_update():
    # no optimizer state yet: moments start at zero, step count 1 (bias correction at its largest)
    model = make_model(seed=4)
    weights = [model.w1, model.w2, model.w3]
    opt = make_optimizer("adam", weights)
    virtual = virtual_step_for(opt, weights)
    grads = torch.autograd.grad(ref_loss(weights, model.alphas.alpha.detach(), TRAIN), weights)
    copies = [w.detach().clone() for w in weights]
    virtual.apply(copies, grads)
    for a, b in zip(copies, real_step(model, opt, "adam")):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # the Jacobian of the update: autograd of the first Adam step w.r.t. the gradient, entry by entry
    g = [x.detach().clone().requires_grad_(True) for x in grads]
    group = opt.optimizer.param_groups[0]
    b1, b2 = group["betas"]
    for gi, jac in zip(g, virtual.jacobian([w.detach() for w in weights], grads)):
        step = (
            group["lr"]
            * math.sqrt(1 - b2)
            / (1 - b1)
            * (1 - b1)
            * gi
            / ((1 - b2) ** 0.5 * gi.abs() + group["eps"])
        )
        (auto,) = torch.autograd.grad(step.sum(), gi)
        torch.testing.assert_close(jac, auto, rtol=1e-9, atol=1e-12)


def test_unknown_optimizer_is_refused_by_name():
    model = make_model()
    weights = [model.w1, model.w2, model.w3]

    class Adagrad:
        optimizer = torch.optim.Adagrad(weights)

    with pytest.raises(ValueError, match="sgd, nag or adam.*Adagrad"):
        virtual_step_for(Adagrad(), weights)


# ------------------------------------------------------------------ --clip-norm
def clipped_real_step(model, opt, kind, max_norm, batch):
    """The weights after fairseq's own clip-then-step: ``clip_grad_norm`` (fairseq.utils.clip_grad_norm_
    on the optimizer's parameters, as the trainer calls it) and ``step()``, on copies, same state."""
    model2 = copy.deepcopy(model)
    ws = [model2.w1, model2.w2, model2.w3]
    opt2 = make_optimizer(kind, ws)
    opt2.optimizer.load_state_dict(copy.deepcopy(opt.optimizer.state_dict()))
    grads = torch.autograd.grad(ref_loss(ws, model2.alphas.alpha.detach(), batch), ws)
    for w, g in zip(ws, grads):
        w.grad = g.clone()
    if hasattr(opt2, "clip_grad_norm"):
        norm = opt2.clip_grad_norm(max_norm)
    else:
        norm = fairseq_utils.clip_grad_norm_(ws, max_norm)
    opt2.step()
    return [w.detach() for w in ws], float(norm)


def clip_constant(weights, alpha, max_norm, batch=TRAIN):
    """``min(1, max_norm / (||g|| + 1e-6))`` of the training gradient, by hand, as a number."""
    grads = torch.autograd.grad(ref_loss(weights, alpha, batch), weights)
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
    return min(1.0, max_norm / (norm + 1e-6)), norm


@pytest.mark.parametrize("kind", ["sgd", "sgd_nesterov", "nag", "adam"])
def test_clipped_virtual_step_is_fairseqs_clip_then_step(kind):
    # float32, as fairseq trains (its clip_grad_norm_ takes float32 norms and refuses float64)
    model, weights, opt = warmed_up(kind, dtype=torch.float32)
    alpha = model.alphas.alpha.detach()
    batch = cast(TRAIN, torch.float32)
    _, norm = clip_constant(weights, alpha, 1.0, batch)
    max_norm = 0.3 * norm  # the batch's gradient norm is above the threshold: fairseq clips
    want, fairseq_norm = clipped_real_step(model, opt, kind, max_norm, batch)
    assert fairseq_norm == pytest.approx(norm, rel=1e-5) and fairseq_norm > max_norm
    virtual = virtual_step_for(opt, weights, clip_norm=max_norm)
    grads = torch.autograd.grad(ref_loss(weights, alpha, batch), weights)
    copies = [w.detach().clone() for w in weights]
    virtual.apply(copies, grads)
    for a, b in zip(copies, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # clipping matters here: the unclipped rule lands elsewhere
    unclipped = [w.detach().clone() for w in weights]
    virtual_step_for(opt, weights).apply(unclipped, grads)
    assert max(float((a - b).abs().max()) for a, b in zip(unclipped, want)) > 1e-3
    # a threshold above the norm leaves the step exactly as without clipping
    loose = [w.detach().clone() for w in weights]
    virtual_step_for(opt, weights, clip_norm=2 * norm).apply(loose, grads)
    assert all(torch.equal(a, b) for a, b in zip(loose, unclipped))


@pytest.mark.parametrize("kind", ["sgd", "sgd_nesterov", "nag", "adam"])
def test_clipped_second_order_gradient_equals_autograd_with_constant_clip_coefficient(kind):
    """Reference: autograd through ``w' = U(w, c g)`` with ``c = max_norm / (||g|| + 1e-6)`` a constant
    (DARTS' recurrent architect treats the clip coefficient so)."""
    model, weights, opt = warmed_up(kind)
    alpha = model.alphas.alpha.detach().clone().requires_grad_(True)
    coef, norm = clip_constant(weights, alpha.detach(), 1.0)
    max_norm = 0.3 * norm
    coef, _ = clip_constant(weights, alpha.detach(), max_norm)
    assert coef < 0.5
    grads = torch.autograd.grad(ref_loss(weights, alpha, TRAIN), weights, create_graph=True)
    w_virtual = unrolled(kind, opt, weights, [coef * g for g in grads])
    (exact,) = torch.autograd.grad(ref_loss(w_virtual, alpha, VAL), alpha)
    architect = BilevelArchitect(weights, architecture_parameters(model), order=2)
    got = architect.alpha_gradients(
        *closures(model), virtual_step=virtual_step_for(opt, weights, clip_norm=max_norm)
    )["grads"][0]
    assert rel_err(got, exact) < 1e-3
    # the unclipped second-order gradient is another one
    unclipped, _ = hypergradient(kind, model, weights, opt)
    assert rel_err(unclipped, exact) > 0.02
