"""Domain distribution p: fixed (uniform or given) or the robust min-max update (docs/method.md, section 2).

Robust variant: keep an estimate ``L_hat[d]`` of every domain's validation loss (an
exponential moving average of the architecture-batch losses of that domain) and, after a
weight step, set ``p = softmax(eta_p * L_hat)``, so domains that do worse are sampled more.
``eta_p = 0`` keeps p as it was given.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch


class DomainSampler:
    """The domain distribution p and its robust update (the draws themselves are laid out per
    epoch by :func:`mdnas_fairseq.data.draw_domain_batches`)."""

    def __init__(
        self,
        num_domains: int,
        probs: Optional[Sequence[float]] = None,
        eta_p: float = 0.0,
        loss_ema: float = 0.9,
    ):
        if num_domains < 1:
            raise ValueError(f"need at least one domain, got {num_domains}")
        if probs is None:
            p = torch.full((num_domains,), 1.0 / num_domains, dtype=torch.float64)
        else:
            p = torch.tensor(list(probs), dtype=torch.float64)
            if p.shape != (num_domains,):
                raise ValueError(
                    f"domain probabilities: got {p.numel()} values for {num_domains} domains"
                )
            if not torch.isfinite(p).all() or (p < 0).any() or float(p.sum()) <= 0:
                raise ValueError(
                    f"domain probabilities must be finite and non-negative with a positive sum, got {list(probs)}"
                )
            p = p / p.sum()
        if eta_p < 0:
            raise ValueError(f"eta_p must be >= 0, got {eta_p}")
        if not 0.0 <= loss_ema < 1.0:
            raise ValueError(f"loss_ema must be in [0, 1), got {loss_ema}")
        self.probs = p
        # the domains that are ever drawn: a domain given probability 0 (e.g. an old domain of an
        # extension, which is not trained) stays at 0 under the robust update too
        self.support = p > 0
        self.eta_p = float(eta_p)
        self.loss_ema = float(loss_ema)
        self.loss_estimates = torch.full((num_domains,), float("nan"), dtype=torch.float64)

    @property
    def num_domains(self) -> int:
        return self.probs.numel()

    def to(self, device) -> DomainSampler:
        """Keep p and the loss estimates on ``device`` (the model's), so updates need no host sync."""
        self.probs = self.probs.to(device)
        self.support = self.support.to(device)
        self.loss_estimates = self.loss_estimates.to(device)
        return self

    def observe(self, losses: torch.Tensor, seen: torch.Tensor) -> None:
        """Record held-out losses: ``losses[d]`` for every domain with ``seen[d]`` (moving average).

        Tensor operations only (no host synchronisation). A non-finite loss (e.g. an fp16
        overflow) is ignored: one inf would otherwise make ``softmax(eta_p * L_hat)`` NaN.
        """
        old = self.loss_estimates
        losses = torch.as_tensor(losses).to(old)
        seen = torch.as_tensor(seen).to(old.device).bool() & torch.isfinite(losses)
        averaged = torch.where(
            torch.isnan(old), losses, self.loss_ema * old + (1.0 - self.loss_ema) * losses
        )
        self.loss_estimates = torch.where(seen, averaged, old)

    def update(self) -> torch.Tensor:
        """Robust update ``p = softmax(eta_p * L_hat)`` over the domains that are drawn (given a
        positive probability); no change while eta_p = 0 or one of them is unseen."""
        if self.eta_p > 0:
            support = self.support.to(self.loss_estimates.device)
            all_seen = ~(torch.isnan(self.loss_estimates) & support).any()
            scores = (self.eta_p * self.loss_estimates.nan_to_num(0.0)).masked_fill(
                ~support, float("-inf")
            )
            robust = torch.softmax(scores, dim=0)
            self.probs = torch.where(all_seen, robust, self.probs)
        return self.probs

    def state_dict(self) -> Dict[str, object]:
        return {
            "probs": self.probs.cpu().clone(),
            "loss_estimates": self.loss_estimates.cpu().clone(),
            "eta_p": self.eta_p,
        }

    def load_state_dict(self, state: Dict[str, object]) -> None:
        probs = torch.as_tensor(state["probs"], dtype=torch.float64)
        if probs.shape != self.probs.shape:
            raise ValueError(
                f"saved domain probabilities are for {probs.numel()} domains, this run has {self.num_domains}"
            )
        device = self.probs.device
        self.probs = probs.clone().to(device)
        self.loss_estimates = (
            torch.as_tensor(state["loss_estimates"], dtype=torch.float64).clone().to(device)
        )
