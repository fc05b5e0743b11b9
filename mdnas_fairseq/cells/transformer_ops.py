"""Candidate operations of the searchable Transformer's slots (pure PyTorch).

Every candidate maps ``x`` of shape (T, B, C) (fairseq's time-major layout) to (T, B, C) and is
causal: output position t depends on input positions <= t only (tested for every candidate).
Every candidate takes an optional ``padding_mask`` (B, T), True at pad positions, and ignores pads:
the outputs at real positions are those of the sequence without its padding, left or right
(tested). The token mixers need it: attention never attends from a real token to a pad
(:func:`attention_blocked`), the convolutions zero pad positions' inputs (:func:`zero_pads`), so a
left pad acts as the zeros a convolution pads with; position-wise candidates ignore it.
(:class:`~mdnas_fairseq.cells.transformer.SearchableTransformerLM` passes no mask: it moves a
sentence's leading pads to its end, where causality hides them, which costs nothing.)

* :class:`FeedForward`: ``fc2(act(fc1(x)))`` with ReLU, GELU or squared ReLU (Primer) and a
  hidden size F: ``2 C F + F + C`` parameters. fairseq has no such module (its Transformer layer
  inlines fc1/fc2) and no squared ReLU, so it is written here.
* :class:`CausalDepthwiseConv`: one kernel of width k per channel, left-padded by ``k - 1`` (a
  position never sees the future): ``C k + C`` parameters. fairseq's ``LightweightConv`` with C
  heads computes the same function through a (B C, T, T + k - 1) band matrix, too big to use.
* :class:`LightConvBlock`: fairseq's lightweight-convolution block (Wu et al. 2019): a GLU input
  projection (C -> 2C), a lightweight convolution (``conv``, given), an output projection (C -> C).
* :class:`CausalSelfAttention` and :class:`CausalLightweightConv`: fairseq-free versions of
  causal multi-head self-attention and of fairseq's ``LightweightConv1dTBC`` (same parameters,
  same function, tested against fairseq's). The fairseq model uses fairseq's own modules.
* :func:`torch_candidates`: a candidate factory built from these (the core's tests, users
  without fairseq).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

CandidateFactory = Callable[[str], nn.Module]

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "sqrelu": lambda x: F.relu(x).square(),  # squared ReLU (So et al., Primer, 2021)
}


def zero_pads(x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
    """``x`` (T, B, C) with the pad positions of ``padding_mask`` (B, T) set to 0 (None: ``x``)."""
    if padding_mask is None:
        return x
    return x.masked_fill(padding_mask.t().unsqueeze(-1), 0.0)


def attention_blocked(steps: int, padding_mask: Optional[Tensor], device) -> Tensor:
    """Where causal self-attention must not look: (T, T) without padding, else (B, T, T); True
    (blocked) above the diagonal (the future) and, for a real query, at every pad key. A pad query
    still sees the pads before it (a row never is all blocked, which would give NaN), and no real
    query sees it."""
    future = torch.ones(steps, steps, dtype=torch.bool, device=device).triu(1)
    if padding_mask is None:
        return future
    pad = padding_mask.to(device=device, dtype=torch.bool)
    return future | (pad[:, None, :] & ~pad[:, :, None])


class Identity(nn.Module):
    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None, incremental_state=None):
        return x  # position-wise: a decoding step is the same computation


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str, activation_dropout: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown feed-forward activation {activation!r}; known: {sorted(ACTIVATIONS)}"
            )
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.activation, self.activation_dropout = activation, activation_dropout

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None, incremental_state=None):
        h = F.dropout(  # position-wise: a decoding step is the same computation
            ACTIVATIONS[self.activation](self.fc1(x)), self.activation_dropout, self.training
        )
        return self.fc2(h)


def causal_conv_tbc(
    x: Tensor, weight: Tensor, bias=None, padding_l: Optional[int] = None
) -> Tensor:
    """Depthwise convolution of ``x`` (T, B, C) with ``weight`` (C, 1, k), left-padded by k - 1.

    ``out[t] = sum_m weight[:, 0, m] * x[t + m - (k - 1)]`` (the orientation of fairseq's
    ``LightweightConv1dTBC`` with ``padding_l = k - 1``). ``padding_l`` (default k - 1) pads
    that many zeros on the left and k - 1 - padding_l on the right: ``(k - 1) // 2`` centres the
    kernel (not causal; the translation encoder's convolutions).
    """
    k = weight.shape[-1]
    left = k - 1 if padding_l is None else padding_l
    y = F.conv1d(
        F.pad(x.permute(1, 2, 0), (left, k - 1 - left)), weight.to(x.dtype), groups=x.shape[-1]
    )
    y = y.permute(2, 0, 1)
    return y if bias is None else y + bias.to(x.dtype)


class CausalDepthwiseConv(nn.Module):
    """Causal depthwise convolution; with ``padding_l`` (see :func:`causal_conv_tbc`) centred."""

    def __init__(self, dim: int, kernel_size: int, padding_l: Optional[int] = None):
        super().__init__()
        self.kernel_size, self.padding_l = kernel_size, padding_l
        self.weight = nn.Parameter(torch.empty(dim, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv1d's initialisation

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        return causal_conv_tbc(zero_pads(x, padding_mask), self.weight, self.bias, self.padding_l)


class CausalLightweightConv(nn.Module):
    """fairseq's lightweight convolution (``LightweightConv1dTBC``, ``padding_l = k - 1``,
    ``weight_softmax``) in plain PyTorch: H softmax-normalised kernels, head h covering channels
    ``h R .. (h + 1) R - 1`` (R = C / H)."""

    def __init__(self, dim: int, kernel_size: int, num_heads: int, weight_dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"lightweight convolution: {dim} channels are not divisible by {num_heads} heads"
            )
        self.num_heads, self.kernel_size, self.weight_dropout = (
            num_heads,
            kernel_size,
            weight_dropout,
        )
        self.weight = nn.Parameter(torch.empty(num_heads, 1, kernel_size))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        x = zero_pads(x, padding_mask)
        weight = F.dropout(
            F.softmax(self.weight.float(), dim=-1), self.weight_dropout, self.training
        )
        per_channel = weight.repeat_interleave(x.shape[-1] // self.num_heads, dim=0)  # (C, 1, k)
        return causal_conv_tbc(x, per_channel)


class LightConvBlock(nn.Module):
    """GLU input projection -> lightweight convolution ``conv`` ((T, B, C) -> (T, B, C)) -> projection.

    The convolution's input is zeroed at pad positions (the GLU of a pad is not 0: biases)."""

    def __init__(self, dim: int, conv: nn.Module):
        super().__init__()
        self.linear1, self.conv, self.linear2 = nn.Linear(dim, 2 * dim), conv, nn.Linear(dim, dim)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None, **conv_options) -> Tensor:
        """``conv_options``: passed to the convolution (fairseq's ``incremental_state``)."""
        h = zero_pads(F.glu(self.linear1(x), dim=-1), padding_mask)
        return self.linear2(self.conv(h, **conv_options))


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention with fairseq's parameters (q, k, v, out projections with bias)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention: {dim} dims are not divisible by {num_heads} heads")
        self.num_heads, self.dropout = num_heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(dim, dim) for _ in range(4)
        )

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        steps, batch, dim = x.shape

        def heads(t: Tensor) -> Tensor:  # (T, B, C) -> (B, H, T, C / H)
            return t.reshape(steps, batch, self.num_heads, dim // self.num_heads).permute(
                1, 2, 0, 3
            )

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        dropout = self.dropout if self.training else 0.0
        if padding_mask is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:  # True = may attend, one (T, T) pattern per sample, broadcast over the heads
            allowed = ~attention_blocked(steps, padding_mask, x.device)[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        return self.out_proj(out.permute(2, 0, 1, 3).reshape(steps, batch, dim))


def kernel_of(name: str, prefix: str) -> int:
    """The kernel width of a convolution candidate's name, e.g. ``dwconv_7`` -> 7."""
    return int(name[len(prefix) :])


def build_common_candidate(
    name: str, dim: int, ffn_dim: int, activation_dropout: float = 0.0, causal: bool = True
):
    """The candidates fairseq has no module for: identity, feed-forward blocks, depthwise convolutions
    (``causal=False``: centred, for an encoder).

    Returns None for a name this function does not build (attention, lightweight convolutions).
    """
    if name == "identity":
        return Identity()
    if name.startswith("ffn_"):
        return FeedForward(dim, ffn_dim, name[len("ffn_") :], activation_dropout)
    if name.startswith("dwconv_"):
        k = kernel_of(name, "dwconv_")
        return CausalDepthwiseConv(dim, k, None if causal else (k - 1) // 2)
    return None


def torch_candidates(
    dim: int,
    num_heads: int,
    ffn_dim: int,
    attention_dropout: float = 0.0,
    activation_dropout: float = 0.0,
    weight_dropout: float = 0.0,
) -> CandidateFactory:
    """A fairseq-free candidate factory: op name -> a new module."""

    def build(name: str) -> nn.Module:
        module = build_common_candidate(name, dim, ffn_dim, activation_dropout)
        if module is not None:
            return module
        if name == "attention":
            return CausalSelfAttention(dim, num_heads, attention_dropout)
        if name.startswith("lightconv_"):
            conv = CausalLightweightConv(
                dim, kernel_of(name, "lightconv_"), num_heads, weight_dropout
            )
            return LightConvBlock(dim, conv)
        raise ValueError(f"unknown Transformer candidate operation {name!r}")

    return build
