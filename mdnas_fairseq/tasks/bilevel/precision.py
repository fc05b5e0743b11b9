"""Batches and losses in the model's precision (``--fp16``).

fairseq converts the training sample to the model's device and dtype before ``train_step``; the
batches the task adds itself (held-out batches of the alpha step, contrastive partners)
get the same treatment here. The alpha-step loss is scaled like the weight loss: by the fp16
optimizer's current loss scale times the alpha step's own factor (:class:`AlphaLossScale`), so
gradients through fp16 activations neither overflow nor underflow.
"""

from typing import Dict

import torch
from fairseq import utils


def model_device_dtype(core):
    """Device and floating dtype of the model's weights (alpha is always fp32: not asked)."""
    for p in core.parameters():
        if p.is_floating_point() and p.requires_grad:
            return p.device, p.dtype
    p = next(core.parameters())
    return p.device, p.dtype


def to_model(batch, core):
    """``batch`` on the model's device, its float32 tensors in the model's dtype."""
    device, dtype = model_device_dtype(core)

    def convert(t):
        if t.device != device:
            t = t.to(device, non_blocking=True)
        if t.dtype == torch.float32 and dtype in (torch.float16, torch.bfloat16):
            t = t.to(dtype)
        return t

    return utils.apply_to_sample(convert, batch)


def loss_scale(optimizer) -> float:
    """The loss scale of fairseq's fp16 optimizers (1 for fp32): a host number, no sync."""
    scaler = getattr(optimizer, "scaler", None)
    return float(scaler.loss_scale) if scaler is not None else 1.0


def is_fp16(optimizer) -> bool:
    return getattr(optimizer, "scaler", None) is not None


def scale_window(optimizer) -> int:
    """Updates without overflow after which fairseq's fp16 scaler doubles its loss scale
    (``--fp16-scale-window``, by default ``2**14 / (workers * update_freq)``)."""
    return int(getattr(optimizer.scaler, "scale_window", 2000))


class AlphaLossScale:
    """The alpha step's factor on fairseq's fp16 loss scale, a dynamic loss scaler of its own.

    The alpha-step objective (a per-token mean on a held-out batch) is scaled by
    ``loss_scale(optimizer) * factor``. Like fairseq's ``DynamicLossScaler``: an alpha gradient
    that overflowed (on any worker) halves the factor and its step is skipped; after ``window``
    alpha steps in a row without overflow (the optimizer's own ``scale_window``) the factor doubles,
    so a factor lowered by one overflow grows back and a per-token objective whose small gradients
    underflow gets a larger scale, until the next overflow says it is too large. The doubling is
    skipped while the alpha step's scale would pass :attr:`MAX_SCALE` (fairseq's scaler has no
    bound and relies on overflows alone; this keeps a run whose alpha gradient never overflows from
    growing it without end). Factor and counter are task state (saved in checkpoints), so a resumed
    search scales its alpha steps as the uninterrupted one does.
    """

    MAX_SCALE = 2.0**24  # bound on loss_scale(optimizer) * factor for a doubling

    def __init__(self, factor: float = 1.0):
        self.factor = float(factor)
        self.steps_since_rescale = 0  # alpha steps without overflow since the last change

    def scale(self, optimizer_scale: float) -> float:
        return optimizer_scale * self.factor

    def update(self, overflow: bool, optimizer_scale: float, window: int) -> bool:
        """Account for one alpha step; True when the factor changed."""
        if overflow:
            self.factor /= 2.0
            self.steps_since_rescale = 0
            return True
        self.steps_since_rescale += 1
        if self.steps_since_rescale < max(int(window), 1):
            return False
        self.steps_since_rescale = 0
        if optimizer_scale * self.factor * 2.0 > self.MAX_SCALE:
            return False
        self.factor *= 2.0
        return True

    def state_dict(self) -> Dict[str, float]:
        return {"factor": self.factor, "steps_since_rescale": self.steps_since_rescale}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.factor = float(state["factor"])
        self.steps_since_rescale = int(state["steps_since_rescale"])
