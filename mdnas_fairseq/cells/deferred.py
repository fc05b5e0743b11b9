"""Weight gradients of a recurrent loop's matrix products, computed once per sequence.

A recurrent cell multiplies the same matrices ``W_m`` at every time step: ``z_tm = a_tm W_m``.
Left to autograd, every step's backward computes its own ``a_tm^T dz_tm`` (a small product whose
inner size is the batch) and the steps' results are summed; a compiled step even computes them
when only other gradients are asked for (the architecture step wants d alpha only), because a
compiled backward graph cannot drop outputs. As cuDNN does, this helper defers them:

* the steps multiply by ``W_m.detach()`` and add a zero "probe" ``p_tm`` (a stride-0 view, no
  memory), ``z_tm = a_tm W_m.detach() + p_tm``; the probe's gradient is ``dz_tm``;
* the probes come from :class:`_Probe`, whose backward keeps ``dz_tm``; they all hang on one token
  made by :class:`_Anchor` from the matrices, so autograd runs the anchor's backward after every
  step's backward, and only when some ``W_m`` needs a gradient;
* the anchor's backward returns ``dW_m = [a_0m; ...; a_Tm]^T [dz_0m; ...; dz_Tm]``: ONE product per
  matrix whose inner size is ``T * rows``.

The values are unchanged (``x + 0`` is ``x``); gradients equal autograd's up to summation order.
Pure PyTorch; a backward through it cannot be differentiated again (no double backward).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class _Sink:
    def __init__(self, shapes: Sequence[Tuple[int, ...]]):
        self.shapes = [tuple(s) for s in shapes]
        self.inputs: Dict[int, Tuple[Tensor, ...]] = {}  # step -> the products' left factors a_tm
        self.grads: Dict[int, Tuple[Optional[Tensor], ...]] = {}  # step -> dz_tm


class _Anchor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sink: _Sink, *weights: Tensor) -> Tensor:
        ctx.sink = sink
        return weights[0].new_zeros(())

    @staticmethod
    @once_differentiable
    def backward(ctx, _token_grad):
        sink = ctx.sink
        steps = sorted(t for t in sink.grads if t in sink.inputs)
        grads: List[Optional[Tensor]] = []
        for m in range(len(sink.shapes)):
            pairs = [
                (sink.inputs[t][m], sink.grads[t][m]) for t in steps if sink.grads[t][m] is not None
            ]
            if not pairs:
                grads.append(None)
                continue
            # rows are the second-to-last axis (a stacked (D, H, 2H) matrix has (D, rows, .) products)
            a = torch.cat([p[0] for p in pairs], -2) if len(pairs) > 1 else pairs[0][0]
            dz = torch.cat([p[1] for p in pairs], -2) if len(pairs) > 1 else pairs[0][1]
            grads.append(a.transpose(-2, -1).matmul(dz))
        sink.grads.clear()  # a second backward (retain_graph) fills them again
        return (None, *grads)


class _Probe(torch.autograd.Function):
    @staticmethod
    def forward(ctx, token: Tensor, sink: _Sink, step: int):
        ctx.sink, ctx.step, ctx.like = sink, step, (token.dtype, token.device)
        zero = token.new_zeros(())
        return tuple(zero.expand(shape) for shape in sink.shapes)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        ctx.sink.grads[ctx.step] = grads
        dtype, device = ctx.like
        return torch.zeros((), dtype=dtype, device=device), None, None


class DeferredWeightGrads:
    """Deferred gradients of ``weights`` for one sequence (see the module docstring).

    Args:
        weights: the matrices ``W_m`` of the step's products, in the order of the probes.
        out_shapes: the shape of each product ``z_tm`` (rows, columns), the same at every step;
            (D, rows, columns) for a stacked (D, ., columns) matrix multiplied batch-wise.
    """

    def __init__(self, weights: Sequence[Tensor], out_shapes: Sequence[Tuple[int, ...]]):
        self.sink = _Sink(out_shapes)
        self.token = _Anchor.apply(self.sink, *weights)
        self.detached = tuple(w.detach() for w in weights)

    def probes(self, step: int) -> Tuple[Tensor, ...]:
        return _Probe.apply(self.token, self.sink, step)

    def record(self, step: int, inputs: Sequence[Tensor]) -> None:
        """The left factors ``a_tm`` of step ``step``'s products."""
        self.sink.inputs[step] = tuple(a.detach() for a in inputs)

    @staticmethod
    def wanted(weights: Sequence[Tensor]) -> bool:
        return torch.is_grad_enabled() and any(w.requires_grad for w in weights)
