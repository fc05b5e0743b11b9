"""The virtual step of second-order search, read from fairseq's weight optimizer.

The rule and its state (momentum buffers, Adam moments and step count) are the optimizer's own:
see :mod:`mdnas_fairseq.search.virtual_step`. An optimizer whose rule is not known is an error,
never a silent plain-SGD step. The real step clips its gradient first (fairseq's
``--clip-norm``, ``cfg.optimization.clip_norm``, which the task reads as ``cfg.clip_norm``), and
so does the virtual step.
"""

from typing import List, Sequence

import torch
from fairseq.optim.adam import Adam as FairseqAdamRule
from fairseq.optim.nag import NAG as FairseqNAGRule

from ...search import AdamVirtualStep, NAGVirtualStep, SGDVirtualStep, VirtualStep
from ...search.virtual_step import ClippedVirtualStep

SUPPORTED = "sgd, nag or adam"


def _single_group(inner) -> dict:
    if len(inner.param_groups) != 1:
        raise ValueError(
            f"--alpha-order 2 needs a weight optimizer with one parameter group, got {len(inner.param_groups)}"
        )
    return inner.param_groups[0]


def virtual_step_for(
    optimizer, weights: Sequence[torch.Tensor], clip_norm: float = 0.0
) -> VirtualStep:
    """The next step of fairseq ``optimizer`` on ``weights`` (the trainable weights, in order),
    after fairseq's gradient clipping at ``clip_norm`` (``--clip-norm``; 0: none)."""
    rule = _rule(optimizer, weights)
    if clip_norm and clip_norm > 0:
        return ClippedVirtualStep(rule, float(clip_norm))
    return rule


def _rule(optimizer, weights: Sequence[torch.Tensor]) -> VirtualStep:
    if getattr(optimizer, "scaler", None) is not None:
        raise ValueError("--alpha-order 2 does not run with --fp16 (see --alpha-order's help)")
    inner = getattr(optimizer, "optimizer", None)
    if inner is None:
        raise ValueError(
            f"--alpha-order 2: cannot read the update rule of {type(optimizer).__name__}"
        )
    group = _single_group(inner)
    lr = float(group["lr"])
    states: List[dict] = [inner.state.get(w, {}) for w in weights]
    if isinstance(inner, torch.optim.SGD):
        if group.get("maximize", False):
            raise ValueError("--alpha-order 2 does not support a maximizing SGD")
        return SGDVirtualStep(
            lr=lr,
            momentum=float(group.get("momentum", 0.0)),
            dampening=float(group.get("dampening", 0.0)),
            nesterov=bool(group.get("nesterov", False)),
            weight_decay=float(group.get("weight_decay", 0.0)),
            buffers=[s.get("momentum_buffer") for s in states],
        )
    if isinstance(inner, FairseqNAGRule):
        lr_old = group.get("lr_old", lr)
        return NAGVirtualStep(
            lr=lr,
            momentum=float(group["momentum"]),
            weight_decay=float(group["weight_decay"]),
            lr_correct=lr / lr_old if lr_old > 0 else lr,
            buffers=[s.get("momentum_buffer") for s in states],
        )
    if isinstance(inner, FairseqAdamRule):
        if group.get("amsgrad", False):
            raise ValueError("--alpha-order 2 does not support AMSGrad")
        return AdamVirtualStep(
            lr=lr,
            betas=tuple(group["betas"]),
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            states=states,
        )
    raise ValueError(
        f"--alpha-order 2 takes the virtual step with the weight optimizer's own rule and knows {SUPPORTED}; "
        f"this run uses {type(inner).__module__}.{type(inner).__name__}: use --alpha-order 1 or one of those"
    )
