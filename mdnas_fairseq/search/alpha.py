"""Per-domain architecture parameters and the mixed operation.

One tensor ``alpha`` of shape (D, E, K) holds every domain's structure vector. The mixed
operation on edge ``e`` for domain ``d`` mixes the K candidate outputs with the mixing probabilities
``softmax(alpha[d, e])`` (or a Gumbel-softmax sample of it). Different samples of one batch may
belong to different domains: :meth:`ArchitectureParameters.mixing_probs` then returns one
weight matrix per sample.

A search space may forbid some operations on some edges (:meth:`SearchSpace.allowed_mask`). The mask
is applied when alpha is read, in one place, :meth:`ArchitectureParameters.masked_logits`: it
returns alpha with every disallowed entry at :data:`MASKED_LOGIT` (or ``-inf``) whatever is stored
there, so such an operation has probability exactly 0 in the mixing, the JS regularizer, the logged
entropy and margin, genotype files and heatmaps (``exp(-1e4)`` underflows to 0), and no gradient.
Every consumer reads alpha through it (:func:`architecture_logits`); only the alpha optimizer
holds the raw parameter (:func:`architecture_parameters`). The stored disallowed entries are 0 and
stay 0: they get no gradient, so the optimizer's weight decay (which would pull a stored -1e4
toward 0) has nothing to act on. Checkpoints that stored :data:`MASKED_LOGIT` there load as before
(the stored value is never read; it is reset to 0 on loading).

``alpha`` is an ``nn.Parameter`` (so it is saved in the model's state dict and moved with the
model) whose ``requires_grad`` is False except inside :meth:`ArchitectureParameters.trainable`.
Optimizers built from ``filter(lambda p: p.requires_grad, model.parameters())`` (fairseq's
trainer does exactly this) therefore never see it; the alpha optimizer owns it.

Frozen rows (an extension to more domains, :mod:`mdnas_fairseq.cells.extension`): the first
``frozen`` architectures' rows live in a separate parameter ``frozen_alpha`` that never requires
gradients, and ``alpha`` holds only the new rows. The alpha optimizer holds ``alpha`` alone, so
neither its gradient nor its (coupled L2) weight decay can move an old row; every reader sees the
rows together, old ones first, through :meth:`ArchitectureParameters.masked_logits`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Dict, Iterator, List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

DomainSelector = Union[None, int, Tensor]
MASKED_LOGIT = (
    -1e4
)  # finite (also in fp16), so log-space code stays finite; its softmax weight is 0


class ArchitectureParameters(nn.Module):
    """Architecture parameters ``alpha`` (D, E, K) of one cell type."""

    def __init__(
        self,
        num_domains: int,
        num_edges: int,
        num_ops: int,
        init_scale: float = 1e-3,
        allowed=None,
        frozen: int = 0,
    ):
        super().__init__()
        if min(num_domains, num_edges, num_ops) < 1:
            raise ValueError(f"need D, E, K >= 1, got D={num_domains} E={num_edges} K={num_ops}")
        if not 0 <= frozen < num_domains:
            raise ValueError(
                f"{frozen} frozen rows of {num_domains}: an extension keeps at least one row to train"
            )
        alpha = init_scale * torch.randn(num_domains, num_edges, num_ops)
        mask = None
        if allowed is not None:  # (E, K) booleans, see the module docstring
            mask = torch.as_tensor(allowed, dtype=torch.bool)
            if tuple(mask.shape) != (num_edges, num_ops):
                raise ValueError(
                    f"allowed-operation mask of shape {tuple(mask.shape)}, expected ({num_edges}, {num_ops})"
                )
            alpha[:, ~mask] = 0.0  # never read: masked_logits() puts MASKED_LOGIT there
        self.register_buffer("allowed", mask, persistent=False)
        # the old architectures' rows of an extension (module docstring); never trained
        frozen_alpha = nn.Parameter(alpha[:frozen].clone(), requires_grad=False) if frozen else None
        self.register_parameter("frozen_alpha", frozen_alpha)
        self.alpha = nn.Parameter(alpha[frozen:].clone(), requires_grad=False)

    @property
    def num_frozen(self) -> int:
        """Rows that are never trained (the old architectures of an extension)."""
        return 0 if self.frozen_alpha is None else self.frozen_alpha.shape[0]

    @property
    def num_domains(self) -> int:
        return self.num_frozen + self.alpha.shape[0]

    def _apply(self, fn, recurse=True):
        """Move alpha with the model, but keep it fp32: ``model.half()`` (fairseq's ``--fp16``)
        would make its Adam updates underflow. The mixed operation casts softmax(alpha) to the
        activations' dtype, so gradients still reach the fp32 alpha."""
        super()._apply(fn, recurse)
        for p in (self.alpha, self.frozen_alpha):
            if p is not None and p.dtype in (torch.float16, torch.bfloat16):
                p.data = p.data.float()
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Load as usual, then reset the stored disallowed entries to 0 (older checkpoints hold
        MASKED_LOGIT there; either way they are never read)."""
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.allowed is not None:
            with torch.no_grad():
                for p in (self.alpha, self.frozen_alpha):
                    if p is not None:
                        p.masked_fill_(~self.allowed, 0.0)

    @staticmethod
    def rows_in_state(state: Dict[str, Tensor], prefix: str = "") -> Tensor:
        """Every row (old ones first) stored in a state dict under ``prefix``."""
        rows = state[prefix + "alpha"]
        frozen = state.get(prefix + "frozen_alpha")
        return rows if frozen is None else torch.cat([frozen, rows])

    def extend(self, old_rows: Tensor, init_from: Optional[int] = None) -> None:
        """Start an extension: the frozen rows become ``old_rows`` (A_old, E, K), exactly; the new
        rows start at 0 (uniform mixing probabilities), or as a copy of old row ``init_from``."""
        if old_rows.shape != (self.num_frozen,) + tuple(self.alpha.shape[1:]):
            raise ValueError(
                f"old architecture parameters of shape {tuple(old_rows.shape)}, this network keeps "
                f"{self.num_frozen} frozen rows of shape {tuple(self.alpha.shape[1:])}"
            )
        with torch.no_grad():
            self.frozen_alpha.copy_(old_rows)
            if init_from is None:
                self.alpha.zero_()
            else:
                self.alpha.copy_(old_rows[init_from].expand_as(self.alpha))
            if self.allowed is not None:
                self.alpha.masked_fill_(~self.allowed, 0.0)
                self.frozen_alpha.masked_fill_(~self.allowed, 0.0)

    def masked_logits(self, fill: float = MASKED_LOGIT) -> Tensor:
        """alpha (D, E, K) with every disallowed entry at ``fill`` whatever is stored there.

        The one place the allowed-operation mask is applied: every reader of alpha (mixing, the JS
        regularizer, logged statistics, genotype files, heatmaps) goes through it. The disallowed
        entries get no gradient. ``fill`` is :data:`MASKED_LOGIT` (finite, for code working in log
        space) or ``-inf``. Without a mask (and without frozen rows) it returns ``alpha`` itself.
        """
        alpha = (
            self.alpha if self.frozen_alpha is None else torch.cat([self.frozen_alpha, self.alpha])
        )
        if self.allowed is None:
            return alpha
        return alpha.masked_fill(~self.allowed, fill)

    @contextlib.contextmanager
    def trainable(self) -> Iterator[Tensor]:
        """Let gradients reach ``alpha`` inside the block (the alpha step)."""
        before = self.alpha.requires_grad
        self.alpha.requires_grad_(True)
        try:
            yield self.alpha
        finally:
            self.alpha.requires_grad_(before)

    def mixing_probs(
        self,
        domains: DomainSelector = None,
        temperature: float = 1.0,
        gumbel: bool = False,
        hard: bool = False,
    ) -> Tensor:
        """Mixing probabilities of the mixed operation: softmax(alpha), per architecture row.

        Args:
            domains: None for all domains (D, E, K); an int for one domain (E, K); a LongTensor
                of shape (B,) with one domain per sample (B, E, K).
            temperature: softmax temperature (Gumbel-softmax temperature when ``gumbel``).
            gumbel: sample relaxed one-hot probabilities instead of the plain softmax (training only).
            hard: with ``gumbel``, straight-through one-hot probabilities.
        """
        alpha = self.masked_logits(float("-inf"))  # exactly 0 at any temperature
        if domains is not None:
            if isinstance(domains, int):
                if not 0 <= domains < self.num_domains:
                    raise IndexError(
                        f"domain {domains} out of range for {self.num_domains} domains"
                    )
            alpha = alpha[domains]
        if gumbel and self.training:
            return F.gumbel_softmax(alpha, tau=temperature, hard=hard, dim=-1)
        return F.softmax(alpha / temperature, dim=-1)


def mix(candidates: Tensor, probs: Tensor) -> Tensor:
    """Mixture of the candidate outputs: the mixed operation.

    Args:
        candidates: (K, B, ...) outputs of the K candidate operations for a batch of B samples.
        probs: (K,) one weight vector for the batch, or (B, K) one per sample.

    Returns:
        (B, ...) ``sum_k probs[.., k] * candidates[k]``.
    """
    if probs.dim() == 1:
        return torch.tensordot(probs, candidates, dims=([0], [0]))
    if (
        probs.dim() != 2
        or probs.shape[0] != candidates.shape[1]
        or probs.shape[1] != candidates.shape[0]
    ):
        raise ValueError(
            f"probs {tuple(probs.shape)} do not fit candidates {tuple(candidates.shape)}"
        )
    extra = candidates.dim() - 2
    return (probs.t().reshape(*probs.t().shape, *([1] * extra)) * candidates).sum(0)


def annealed_temperature(
    step: int, total_steps: int, start: float = 1.0, end: float = 0.1
) -> float:
    """Exponential annealing of the (Gumbel-)softmax temperature from ``start`` to ``end``."""
    if total_steps <= 0:
        return end
    frac = min(max(step / total_steps, 0.0), 1.0)
    return float(start * math.exp(frac * math.log(end / start)))


def architecture_parameters(module: nn.Module) -> List[nn.Parameter]:
    """All ``alpha`` tensors of the :class:`ArchitectureParameters` inside ``module``, found by kind:
    what the alpha optimizer holds (an extension's frozen rows are not among them)."""
    return [m.alpha for m in module.modules() if isinstance(m, ArchitectureParameters)]


def architecture_logits(module: nn.Module) -> List[Tensor]:
    """What every reader of alpha uses: :meth:`ArchitectureParameters.masked_logits` of each
    :class:`ArchitectureParameters` inside ``module`` (same order as :func:`architecture_parameters`,
    which gives the raw parameters, for the alpha optimizer only)."""
    return [m.masked_logits() for m in module.modules() if isinstance(m, ArchitectureParameters)]


def weight_parameters(module: nn.Module) -> List[nn.Parameter]:
    """The parameters of ``module`` that are not architecture parameters (trained or frozen rows)."""
    alphas = {
        id(p)
        for m in module.modules()
        if isinstance(m, ArchitectureParameters)
        for p in m.parameters()
    }
    return [p for p in module.parameters() if id(p) not in alphas]


@contextlib.contextmanager
def alphas_trainable(module: nn.Module) -> Iterator[List[Tensor]]:
    """Enable gradients for every architecture parameter of ``module`` inside the block."""
    with contextlib.ExitStack() as stack:
        alphas = [
            stack.enter_context(m.trainable())
            for m in module.modules()
            if isinstance(m, ArchitectureParameters)
        ]
        yield alphas
