"""The virtual weight step of second-order DARTS, written as the weight optimizer's own update rule.

Second-order DARTS evaluates the validation loss at ``w' = w - U(g)``, the weights after one step
of the weight optimizer on the training gradient ``g = grad_w L_train(w, alpha)``. Its
alpha gradient needs ``dw'/dalpha = -diag(dU/dg) . d g / d alpha``: for every optimizer
below the update of a weight depends on its own gradient entry only (plus optimizer state that
does not depend on alpha), so the Jacobian ``dU/dg`` is diagonal. A :class:`VirtualStep` gives

* :meth:`~VirtualStep.apply`: ``w <- w'`` in place, exactly as the optimizer would (its state is
  read, never written), and
* :meth:`~VirtualStep.jacobian`: ``dU/dg`` per weight entry, evaluated at ``g``, so that
  ``(dw'/dalpha)^T v = -H_{alpha w} (dU/dg * v)``, which the architect computes by finite
  differences along ``dU/dg * v``.

Rules (the classes read their settings and state from the optimizer, see the fairseq glue):

* :class:`SGDVirtualStep`: ``torch.optim.SGD`` (fairseq ``--optimizer sgd``): momentum, dampening,
  Nesterov, L2 weight decay; the momentum buffer of the optimizer's state.
* :class:`NAGVirtualStep`: fairseq's ``--optimizer nag`` (its own Nesterov form, decoupled decay).
* :class:`AdamVirtualStep`: fairseq's ``--optimizer adam`` (Adam with decoupled weight decay, the
  first and second moments and the step count of the optimizer's state, bias correction as fairseq
  applies it: ``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``).

Gradient clipping (``--clip-norm``): :class:`ClippedVirtualStep` wraps a rule and clips ``g`` as
fairseq's ``utils.clip_grad_norm_`` does before the real step (the total 2-norm over all the
trainable weights' gradients, ``c = min(1, max_norm / (||g|| + 1e-6))``, ``max_norm`` 0: no
clipping), then applies the rule to ``c g``. Its Jacobian is ``c * dU/dg`` at ``c g``: the clip
coefficient is held constant, as DARTS' recurrent architect does (``quark0/darts`` rnn/architect.py
scales the implicit gradient by ``eta * clip_coef``); its own derivative through ``||g||`` is left
out.

``g`` is the gradient of the training objective per token (or per sentence with
``--sentence-avg``) of ONE batch, normalised as fairseq normalises the real step's gradient before
it clips (the trainer divides the summed-loss gradient by the sample size): with one worker and
``--update-freq 1`` the virtual step clips exactly the gradient the real step clips. With several
workers or ``--update-freq k`` the real step clips the mean over all those batches, whose norm is
usually smaller than one batch's; the virtual step still uses its one batch (as DARTS does), so it
may clip where the real step would not.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
from torch import Tensor


class VirtualStep(abc.ABC):
    """One weight-optimizer step on given gradients, without touching the optimizer's state."""

    @abc.abstractmethod
    def apply(self, weights: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
        """Replace every weight by its value after the step (in place, no autograd)."""

    @abc.abstractmethod
    def jacobian(self, weights: Sequence[Tensor], grads: Sequence[Tensor]) -> List[Tensor]:
        """``dU/dg`` entry by entry, at the weights and gradients before the step."""


def _state_for(states: Optional[Sequence[Optional[dict]]], k: int) -> dict:
    if states is None or states[k] is None:
        return {}
    return states[k]


@dataclass
class SGDVirtualStep(VirtualStep):
    """``torch.optim.SGD``: ``d = g + wd w``; ``buf = m buf + (1 - dampening) d`` (``buf = d`` at the
    first step); ``w' = w - lr (d + m buf)`` with Nesterov, else ``w' = w - lr buf``."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    buffers: Optional[Sequence[Optional[Tensor]]] = None  # the optimizer's momentum buffers

    def _buffer(self, k: int) -> Optional[Tensor]:
        return None if self.buffers is None else self.buffers[k]

    def apply(self, weights, grads):
        with torch.no_grad():
            for k, (w, g) in enumerate(zip(weights, grads)):
                d = g + self.weight_decay * w if self.weight_decay else g
                if self.momentum:
                    buf = self._buffer(k)
                    buf = d if buf is None else self.momentum * buf + (1 - self.dampening) * d
                    d = d + self.momentum * buf if self.nesterov else buf
                w.sub_(self.lr * d)

    def jacobian(self, weights, grads):
        out = []
        for k, g in enumerate(grads):
            if not self.momentum:
                scale = 1.0
            else:
                first = self._buffer(k) is None  # torch starts the buffer at d, undamped
                through_buffer = 1.0 if first else 1.0 - self.dampening
                scale = 1.0 + self.momentum * through_buffer if self.nesterov else through_buffer
            out.append(torch.full_like(g, self.lr * scale))
        return out


@dataclass
class NAGVirtualStep(VirtualStep):
    """fairseq's NAG: ``w' = (1 - lr wd) w + m^2 lr_correct buf - (1 + m) lr g``."""

    lr: float
    momentum: float = 0.99
    weight_decay: float = 0.0
    lr_correct: float = 1.0
    buffers: Optional[Sequence[Optional[Tensor]]] = None

    def apply(self, weights, grads):
        with torch.no_grad():
            for k, (w, g) in enumerate(zip(weights, grads)):
                if self.weight_decay:
                    w.mul_(1 - self.lr * self.weight_decay)
                buf = None if self.buffers is None else self.buffers[k]
                if buf is not None:
                    w.add_(buf.to(w.dtype), alpha=self.momentum * self.momentum * self.lr_correct)
                w.sub_((1 + self.momentum) * self.lr * g)

    def jacobian(self, weights, grads):
        return [torch.full_like(g, (1 + self.momentum) * self.lr) for g in grads]


@dataclass
class AdamVirtualStep(VirtualStep):
    """fairseq's Adam at step ``t + 1`` from its state ``(t, m, v)``:
    ``m' = b1 m + (1 - b1) g``, ``v' = b2 v + (1 - b2) g^2``,
    ``w' = (1 - lr wd) w - s m' / (sqrt(v') + eps)`` with ``s = lr sqrt(1 - b2^(t+1)) / (1 - b1^(t+1))``."""

    lr: float
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    states: Optional[Sequence[Optional[dict]]] = field(
        default=None
    )  # per weight: step, exp_avg, exp_avg_sq

    def _moments(self, k: int, w: Tensor, g: Tensor):
        state = _state_for(self.states, k)
        b1, b2 = self.betas
        t = int(state.get("step", 0)) + 1
        m = state.get("exp_avg")
        v = state.get("exp_avg_sq")
        m = (1 - b1) * g if m is None else b1 * m.to(g.dtype) + (1 - b1) * g
        v = (1 - b2) * g * g if v is None else b2 * v.to(g.dtype) + (1 - b2) * g * g
        step_size = self.lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        return m, v, step_size

    def apply(self, weights, grads):
        with torch.no_grad():
            for k, (w, g) in enumerate(zip(weights, grads)):
                m, v, s = self._moments(k, w, g)
                if self.weight_decay:
                    w.mul_(1 - self.lr * self.weight_decay)
                w.sub_(s * m / (v.sqrt() + self.eps))

    def jacobian(self, weights, grads):
        b1, b2 = self.betas
        out = []
        for k, (w, g) in enumerate(zip(weights, grads)):
            m, v, s = self._moments(k, w, g)
            root = v.sqrt()
            denom = root + self.eps
            # d/dg [m / (sqrt(v) + eps)] with dm/dg = 1 - b1 and dv/dg = 2 (1 - b2) g; where v = 0,
            # g = 0 and m = 0 too, and the second term vanishes
            positive = root > 0
            safe_root = torch.where(positive, root, torch.ones_like(root))
            through_v = torch.where(
                positive, m * (1 - b2) * g / (denom * denom * safe_root), torch.zeros_like(root)
            )
            out.append(s * ((1 - b1) / denom - through_v))
        return out


def clip_coefficient(grads: Sequence[Tensor], max_norm: float) -> Tensor:
    """fairseq's clip coefficient of ``grads`` (``fairseq.utils.clip_grad_norm_``): the total 2-norm
    of the per-tensor norms (in float32, as fairseq takes them; float64 gradients, which fairseq's
    float32 norm refuses, in float64), ``min(1, max_norm / (norm + 1e-6))``; 1 when ``max_norm`` is
    0. A 0-dim tensor on the gradients' device (nothing is read on the host)."""
    if not grads:
        return torch.ones(())
    if max_norm <= 0:
        return torch.ones((), dtype=torch.float32, device=grads[0].device)
    norms = [torch.norm(g, p=2, dtype=torch.promote_types(g.dtype, torch.float32)) for g in grads]
    total = torch.norm(torch.stack(norms))
    return (float(max_norm) / (total + 1e-6)).clamp_(max=1)


@dataclass
class ClippedVirtualStep(VirtualStep):
    """``rule`` applied to the gradient clipped as fairseq clips it (``--clip-norm max_norm``).

    ``w' = w - U(c g)`` with ``c = clip_coefficient(g, max_norm)``; the Jacobian is ``c * dU/dg`` at
    ``c g``, with ``c`` held constant (DARTS' recurrent architect does the same: its implicit
    gradient is scaled by ``eta * clip_coef``)."""

    rule: VirtualStep
    max_norm: float

    def clipped(self, grads: Sequence[Tensor]):
        coef = clip_coefficient(grads, self.max_norm)
        return coef, [g * coef for g in grads]

    def apply(self, weights, grads):
        _, clipped = self.clipped(grads)
        self.rule.apply(weights, clipped)

    def jacobian(self, weights, grads):
        coef, clipped = self.clipped(grads)
        return [coef.to(j.dtype) * j for j in self.rule.jacobian(weights, clipped)]
