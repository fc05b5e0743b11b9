"""The architecture step of the bilevel problem (DARTS, first and second order).

Given shared weights ``w`` and architecture parameters ``alpha``, the outer problem minimises
``L_val(w*(alpha), alpha)``. Its gradient is approximated by

* first order:  ``grad_alpha L_val(w, alpha)``;
* second order (DARTS): one virtual weight step ``w' = w - xi * grad_w L_train(w, alpha)``
  (``xi`` the weight optimizer's learning rate), then
  ``grad_alpha L_val(w', alpha) - xi * H v``, where the Hessian-vector product
  ``H v = grad^2_{alpha,w} L_train(w, alpha) . grad_w' L_val(w', alpha)`` is the central finite
  difference ``(grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps)`` with
  ``w+- = w +- eps * grad_w' L_val`` and ``eps = 0.01 / ||grad_w' L_val||``.

The losses are given as closures so the architect works with any model: the virtual step is
applied to the weights in place and undone afterwards, so no copy of the model is needed.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor

LossFn = Callable[[], Tensor]
GradSync = Callable[[List[Tensor]], None]


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


class BilevelArchitect:
    """Updates architecture parameters from validation-batch gradients.

    Args:
        weights: the shared weights ``w`` (those with ``requires_grad`` take part).
        alphas: the architecture parameters; must be disjoint from ``weights``.
        order: 1 (first order) or 2 (DARTS second order).
        lr, betas, weight_decay: the architecture optimizer (Adam, as in DARTS).
        grad_sync: called with the alpha gradients before each update (e.g. an all-reduce mean
            over data-parallel workers, so every worker keeps the same alpha).
    """

    def __init__(
        self,
        weights: Sequence[Tensor],
        alphas: Sequence[Tensor],
        order: int = 1,
        lr: float = 3e-4,
        betas=(0.5, 0.999),
        weight_decay: float = 1e-3,
        grad_sync: Optional[GradSync] = None,
    ):
        if order not in (1, 2):
            raise ValueError(f"architecture step order must be 1 or 2, got {order}")
        self.weights = list(weights)
        self.alphas = list(alphas)
        if not self.alphas:
            raise ValueError("the architect needs at least one architecture parameter")
        shared = {id(p) for p in self.weights} & {id(a) for a in self.alphas}
        if shared:
            raise ValueError("architecture parameters must not be among the weights")
        self.order = order
        self.grad_sync = grad_sync
        self.optimizer = torch.optim.Adam(self.alphas, lr=lr, betas=tuple(betas), weight_decay=weight_decay)

    # ------------------------------------------------------------------ gradients
    def alpha_gradients(
        self,
        train_loss_fn: LossFn,
        val_loss_fn: LossFn,
        weight_lr: float,
        weight_momentum: float = 0.0,
        weight_decay: float = 0.0,
        momentum_buffers: Optional[Sequence[Optional[Tensor]]] = None,
    ) -> Dict[str, object]:
        """Compute the architecture gradient without applying it.

        Returns a dict with ``grads`` (one tensor per alpha) and ``val_loss`` (the validation
        loss the gradient was taken of, at ``w`` for first order and ``w'`` for second order).
        """
        with _requires_grad(self.alphas):
            if self.order == 1:
                val_loss = val_loss_fn()
                return {"grads": _grads(val_loss, self.alphas), "val_loss": val_loss.detach()}
            return self._second_order(
                train_loss_fn, val_loss_fn, weight_lr, weight_momentum, weight_decay, momentum_buffers
            )

    def _second_order(self, train_loss_fn, val_loss_fn, xi, momentum, weight_decay, momentum_buffers):
        weights = [w for w in self.weights if w.requires_grad]
        if momentum_buffers is None:
            buffers: List[Optional[Tensor]] = [None] * len(weights)
        else:
            by_id = {id(w): b for w, b in zip(self.weights, momentum_buffers)}
            buffers = [by_id.get(id(w)) for w in weights]
        backup = [w.detach().clone() for w in weights]
        try:
            # 1. virtual step w' = w - xi * (momentum * v + grad_w L_train + wd * w)
            train_grads = _grads(train_loss_fn(), weights)
            with torch.no_grad():
                for w, g, buf in zip(weights, train_grads, buffers):
                    step = g + weight_decay * w
                    if momentum and buf is not None:
                        step = step + momentum * buf
                    w.sub_(xi * step)
            # 2. validation gradients at w'
            val_loss = val_loss_fn()
            grads = _grads(val_loss, self.alphas + weights)
            d_alpha, d_weights = grads[: len(self.alphas)], grads[len(self.alphas) :]
            norm = torch.sqrt(sum((g.double() ** 2).sum() for g in d_weights)) if d_weights else torch.tensor(0.0)
            if float(norm) > 0.0:
                # 3. Hessian-vector product by central finite differences around w
                eps = 0.01 / float(norm)
                grads_plus = self._alpha_grads_at(weights, backup, d_weights, eps, train_loss_fn)
                grads_minus = self._alpha_grads_at(weights, backup, d_weights, -eps, train_loss_fn)
                d_alpha = [
                    da - xi * (gp - gm) / (2.0 * eps) for da, gp, gm in zip(d_alpha, grads_plus, grads_minus)
                ]
            return {"grads": d_alpha, "val_loss": val_loss.detach()}
        finally:
            with torch.no_grad():
                for w, b in zip(weights, backup):
                    w.copy_(b)

    def _alpha_grads_at(self, weights, origin, direction, eps, loss_fn) -> List[Tensor]:
        """grad_alpha of ``loss_fn`` at ``origin + eps * direction``."""
        with torch.no_grad():
            for w, o, d in zip(weights, origin, direction):
                w.copy_(o + eps * d)
        return _grads(loss_fn(), self.alphas)

    # ------------------------------------------------------------------ update
    def step(self, train_loss_fn: LossFn, val_loss_fn: LossFn, weight_lr: float, **virtual_step) -> Dict[str, float]:
        """One architecture update. Weights are left exactly as they were.

        Returns ``{"arch_loss": value}``, the validation loss the gradient was taken of.
        """
        result = self.alpha_gradients(train_loss_fn, val_loss_fn, weight_lr, **virtual_step)
        self.apply_gradients(result["grads"])
        return {"arch_loss": float(result["val_loss"])}

    def apply_gradients(self, grads: List[Tensor]) -> None:
        """Synchronise ``grads`` (``grad_sync``) and take one architecture optimizer step with them.

        A data-parallel worker without a batch (fairseq's dummy batch) calls this with zeros so
        that it still joins the all-reduce and applies the same update as the others.
        """
        if self.grad_sync is not None:
            self.grad_sync(grads)
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
