"""Batches and losses in the model's precision (``--fp16``).

fairseq converts the training sample to the model's device and dtype before ``train_step``; the
batches the task adds itself (held-out batches of the alpha step, contrastive partners)
get the same treatment here. The alpha-step loss is scaled like the weight loss: by the fp16
optimizer's current loss scale, so gradients through fp16 activations do not underflow.
"""

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
