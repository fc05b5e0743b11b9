"""The alpha step of the bilevel problem (DARTS, first and second order).

Given shared weights ``w`` and architecture parameters ``alpha``, the outer problem minimises
``L_val(w*(alpha), alpha)``. Its gradient is approximated by

* first order:  ``grad_alpha L_val(w, alpha)``;
* second order (DARTS): one virtual weight step ``w' = w - U(g)`` with the weight optimizer's own
  update rule ``U`` of the training gradient ``g = grad_w L_train(w, alpha)``
  (:mod:`~mdnas_fairseq.search.virtual_step`; plain SGD: ``U(g) = xi g``), then
  ``grad_alpha L_val(w', alpha) - H u``, where ``u = dU/dg * grad_w' L_val(w', alpha)`` (the
  Jacobian of the update is diagonal) and the Hessian-vector product
  ``H u = grad^2_{alpha,w} L_train(w, alpha) . u`` is the central finite difference
  ``(grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps)`` with
  ``w+- = w +- eps * u`` and ``eps = 0.01 / ||u||`` (``difference="central"``, DARTS, error
  O(eps^2)), or the forward difference ``(grad_alpha L_train(w+, alpha) - grad_alpha
  L_train(w, alpha)) / eps`` whose second point comes free with the virtual step's own backward
  pass (``difference="forward"``: one training pass fewer per step, error O(eps)).

Gradient clipping: with a :class:`~mdnas_fairseq.search.virtual_step.ClippedVirtualStep` the
virtual step clips ``g`` as the real step does (``w' = w - U(c g)``, ``c`` fairseq's clip
coefficient) and ``dU/dg`` carries the factor ``c``, held constant: the derivative of ``c`` itself
through ``||g||`` is left out, as DARTS' recurrent architect leaves it out.

Every evaluation of the training loss in one second-order step replays the random-number state of
the first one, so a model with dropout differentiates ONE stochastic objective: the Hessian-vector
product is a difference of gradients under the same dropout masks, not of two independent draws
(whose difference, divided by ``eps``, would swamp the term).

The losses are given as closures so the architect works with any model: the virtual step is
applied to the weights in place and undone afterwards, so no copy of the model is needed.

Buffers (batch-norm running statistics and batch counts): every forward pass of a second-order
step in training mode updates them, at ``w``, at ``w'`` and at ``w +- eps u``, points the weights
never take. The architect copies the buffers it is given (``buffers``) before a second-order step
and writes them back after it, so the following weight step sees exactly the statistics it would
see without the alpha step. DARTS (``quark0/darts``) does not restore them. A first-order step is
one held-out forward at the real weights ``w`` and leaves its update of the statistics in place,
as DARTS does.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .virtual_step import VirtualStep

LossFn = Callable[[], Union[Tensor, Tuple[Tensor, Any]]]


@contextlib.contextmanager
def _requires_grad(params: Sequence[Tensor]) -> Iterator[None]:
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, b in zip(params, before):
            p.requires_grad_(b)


def _grads(loss: Tensor, params: Sequence[Tensor]) -> List[Tensor]:
    """d loss / d params, with zeros for parameters the loss does not depend on."""
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


class _ReplayRandom:
    """Captures the random-number state (CPU and the weights' CUDA devices) now, and replays it
    later without disturbing the global stream: ``with replay():`` runs its body from the captured
    state and leaves the generators as they were before it."""

    def __init__(self, tensors: Sequence[Tensor]):
        self.devices = sorted({t.device.index or 0 for t in tensors if t.is_cuda})
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(state, device)
            yield


HESSIAN_DIFFERENCES = ("central", "forward")


def _split(result) -> Tuple[Tensor, Any]:
    """A loss closure returns the objective, or (objective, extras) handed back untouched."""
    if isinstance(result, tuple):
        return result[0], result[1]
    return result, None


class BilevelArchitect:
    """Updates architecture parameters from held-out-batch gradients.

    Args:
        weights: the shared weights ``w`` (those with ``requires_grad`` take part).
        alphas: the architecture parameters; must be disjoint from ``weights``.
        order: 1 (first order) or 2 (DARTS second order).
        difference: second order's Hessian-vector product, ``"central"`` (DARTS) or ``"forward"``.
        lr, betas, weight_decay: the alpha optimizer (Adam, as in DARTS).
        buffers: the tensors a second-order step restores afterwards (the model's buffers: batch-norm
            running statistics), or a function returning them (e.g. ``model.buffers``), called at
            every step: moving a module to another device or dtype replaces its buffer tensors.

    The optimizer's state stays in fp32 whatever the model's precision (alpha itself is kept
    in fp32 by :class:`~mdnas_fairseq.search.ArchitectureParameters`).
    """

    def __init__(
        self,
        weights: Sequence[Tensor],
        alphas: Sequence[Tensor],
        order: int = 1,
        lr: float = 3e-4,
        betas=(0.5, 0.999),
        weight_decay: float = 1e-3,
        difference: str = "central",
        buffers: Union[None, Sequence[Tensor], Callable[[], Iterable[Tensor]]] = None,
    ):
        if order not in (1, 2):
            raise ValueError(f"alpha step order must be 1 or 2, got {order}")
        if difference not in HESSIAN_DIFFERENCES:
            raise ValueError(
                f"the Hessian-vector difference must be one of {', '.join(HESSIAN_DIFFERENCES)}, "
                f"got {difference!r}"
            )
        self.difference = difference
        self.weights = list(weights)
        self.alphas = list(alphas)
        if not self.alphas:
            raise ValueError("the architect needs at least one architecture parameter")
        shared = {id(p) for p in self.weights} & {id(a) for a in self.alphas}
        if shared:
            raise ValueError("architecture parameters must not be among the weights")
        self.order = order
        self.buffers = buffers
        self.optimizer = torch.optim.Adam(
            self.alphas, lr=lr, betas=tuple(betas), weight_decay=weight_decay
        )

    def protected_buffers(self) -> List[Tensor]:
        """The buffers a second-order step leaves as it found them."""
        if self.buffers is None:
            return []
        return list(self.buffers() if callable(self.buffers) else self.buffers)

    @property
    def trainable_weights(self) -> List[Tensor]:
        """The weights the virtual step moves: those that require gradients, in order."""
        return [w for w in self.weights if w.requires_grad]

    # ------------------------------------------------------------------ gradients
    def alpha_gradients(
        self,
        train_loss_fn: LossFn,
        val_loss_fn: LossFn,
        virtual_step: Optional[VirtualStep] = None,
        loss_scale: float = 1.0,
    ) -> Dict[str, object]:
        """Compute the alpha gradient without applying it.

        Args:
            train_loss_fn, val_loss_fn: closures evaluating the training / held-out objective
                at the current weights; each returns the objective or ``(objective, extras)``.
            virtual_step: the weight optimizer's update rule (second order only).
            loss_scale: the objective is multiplied by it before differentiation and the
                gradients divided by it (mixed precision: fp16 activations keep small gradients).

        Returns a dict with ``grads`` (one tensor per alpha, possibly non-finite after an fp16
        overflow: the caller checks), ``val_loss`` (the held-out objective the gradient was taken
        of, at ``w`` for first order and ``w'`` for second order) and ``extras`` (what
        ``val_loss_fn`` returned beside the objective, at that point).
        """
        with _requires_grad(self.alphas):
            if self.order == 1:
                val_loss, extras = _split(val_loss_fn())
                grads = _grads(
                    val_loss * loss_scale if loss_scale != 1.0 else val_loss, self.alphas
                )
                if loss_scale != 1.0:
                    grads = [g / loss_scale for g in grads]
                return {"grads": grads, "val_loss": val_loss.detach(), "extras": extras}
            if virtual_step is None:
                raise ValueError(
                    "a second-order alpha step needs the weight optimizer's virtual step"
                )
            if loss_scale != 1.0:
                raise ValueError("the second-order alpha step does not support loss scaling (fp16)")
            return self._second_order(train_loss_fn, val_loss_fn, virtual_step)

    def _second_order(self, train_loss_fn, val_loss_fn, virtual_step: VirtualStep):
        """See the module docstring; weights and the given buffers are restored, also on error."""
        weights = self.trainable_weights
        backup = [w.detach().clone() for w in weights]
        buffers = self.protected_buffers()
        buffer_backup = [b.detach().clone() for b in buffers]
        forward = self.difference == "forward"
        replay = _ReplayRandom(weights)  # the training loss's dropout masks, for every evaluation
        try:
            # 1. virtual step w' = w - U(g), g = grad_w L_train(w, alpha), the optimizer's own rule
            #    (a forward difference also keeps grad_alpha L_train(w, alpha) of the same pass)
            train_grads = _grads(
                _split(train_loss_fn())[0], weights + self.alphas if forward else weights
            )
            train_grads, grads_at_w = train_grads[: len(weights)], train_grads[len(weights) :]
            jacobian = virtual_step.jacobian(backup, train_grads)
            virtual_step.apply(weights, train_grads)
            # 2. held-out gradients at w'
            val_loss, extras = _split(val_loss_fn())
            grads = _grads(val_loss, self.alphas + weights)
            d_alpha, d_weights = grads[: len(self.alphas)], grads[len(self.alphas) :]
            # 3. (dw'/dalpha)^T v = -H_{alpha w} u with u = dU/dg * v, by finite differences around
            #    w: (grad_alpha L_train(w + eps u) - grad_alpha L_train(w - eps u)) / (2 eps), or
            #    (grad_alpha L_train(w + eps u) - grad_alpha L_train(w)) / eps
            direction = [j * v for j, v in zip(jacobian, d_weights)]
            if direction:
                norm = torch.sqrt(sum((u.double() ** 2).sum() for u in direction))
                # eps = 0.01 / ||u|| (a zero direction gives equal gradients, hence no term)
                eps = (0.01 / norm.clamp_min(1e-30)).to(direction[0].dtype)
                grads_plus = self._alpha_grads_at(
                    weights, backup, direction, eps, train_loss_fn, replay
                )
                if forward:
                    hessian = [(gp - g0) / eps for gp, g0 in zip(grads_plus, grads_at_w)]
                else:
                    grads_minus = self._alpha_grads_at(
                        weights, backup, direction, -eps, train_loss_fn, replay
                    )
                    hessian = [(gp - gm) / (2.0 * eps) for gp, gm in zip(grads_plus, grads_minus)]
                d_alpha = [da - h for da, h in zip(d_alpha, hessian)]
            return {"grads": d_alpha, "val_loss": val_loss.detach(), "extras": extras}
        finally:
            with torch.no_grad():
                for w, b in zip(weights, backup):
                    w.copy_(b)
                for b, saved in zip(buffers, buffer_backup):
                    b.copy_(saved)

    def _alpha_grads_at(self, weights, origin, direction, eps, loss_fn, replay) -> List[Tensor]:
        """grad_alpha of ``loss_fn`` at ``origin + eps * direction``, under the replayed random
        state of the first training-loss evaluation."""
        with torch.no_grad():
            for w, o, d in zip(weights, origin, direction):
                w.copy_(o + eps * d)
        with replay():
            return _grads(_split(loss_fn())[0], self.alphas)

    # ------------------------------------------------------------------ update
    def step(
        self,
        train_loss_fn: LossFn,
        val_loss_fn: LossFn,
        virtual_step: Optional[VirtualStep] = None,
    ) -> Dict[str, Tensor]:
        """One architecture update on one process. Weights are left exactly as they were.

        Returns ``{"alpha_loss": value}``, the held-out objective the gradient was taken of (a
        tensor: reading it is left to the caller, so no host synchronisation happens here).
        """
        result = self.alpha_gradients(train_loss_fn, val_loss_fn, virtual_step)
        self.apply_gradients(result["grads"])
        return {"alpha_loss": result["val_loss"]}

    def apply_gradients(self, grads: Sequence[Tensor]) -> None:
        """One alpha optimizer step with ``grads`` (already reduced over workers)."""
        self.optimizer.zero_grad(set_to_none=True)
        for alpha, g in zip(self.alphas, grads):
            alpha.grad = g.detach().to(alpha.dtype)
        with _requires_grad(self.alphas):
            self.optimizer.step()
        for alpha in self.alphas:
            alpha.grad = None

    def state_dict(self) -> Dict[str, object]:
        return {"order": self.order, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
