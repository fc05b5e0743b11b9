"""A tiny two-edge network with per-domain mixed operations and an independent functional copy of it
(test helpers for the alpha step)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from mdnas_fairseq.search import ArchitectureParameters, mix

# Smooth candidate operations (no kinks, so finite differences are well behaved).
OPS = [
    lambda z: torch.zeros_like(z),  # none
    torch.tanh,
    torch.sigmoid,
    lambda z: z,  # identity
    F.softplus,
]
K = len(OPS)
NUM_DOMAINS = 2
NUM_EDGES = 2


class TinyNet(nn.Module):
    """x -> mixed op (edge 0) -> linear -> mixed op (edge 1) -> linear; per-sample domains."""

    def __init__(self, seed: int = 0, n_in: int = 3, hidden: int = 4, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        gen = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(0.8 * torch.randn(n_in, hidden, generator=gen))
        self.w2 = nn.Parameter(0.8 * torch.randn(hidden, hidden, generator=gen))
        self.w3 = nn.Parameter(0.8 * torch.randn(hidden, 1, generator=gen))
        self.alphas = ArchitectureParameters(NUM_DOMAINS, NUM_EDGES, K)
        with torch.no_grad():
            self.alphas.alpha.copy_(torch.randn(NUM_DOMAINS, NUM_EDGES, K, generator=gen))

    def forward(self, x, domains):
        probs = self.alphas.mixing_probs(domains)  # (B, E, K)
        z = x @ self.w1
        h = mix(torch.stack([op(z) for op in OPS]), probs[:, 0])
        if self.dropout > 0:
            h = h * dropout_mask(h.shape, h.dtype, self.dropout)
        z = h @ self.w2
        h = mix(torch.stack([op(z) for op in OPS]), probs[:, 1])
        return h @ self.w3


def dropout_mask(shape, dtype, p):
    """An inverted-dropout mask drawn from the global generator."""
    return (torch.rand(shape, dtype=dtype) >= p).to(dtype) / (1.0 - p)


def reference_forward(ws, alpha, x, domains, mask=None):
    """Same network, written with explicit softmax and einsum (an independent code path); ``mask``:
    a given dropout mask after edge 0."""
    w1, w2, w3 = ws
    probs = torch.softmax(alpha, dim=-1)[domains]  # (B, E, K)
    z = x @ w1
    h = torch.einsum("bk,kbh->bh", probs[:, 0], torch.stack([op(z) for op in OPS]))
    if mask is not None:
        h = h * mask
    z = h @ w2
    h = torch.einsum("bk,kbh->bh", probs[:, 1], torch.stack([op(z) for op in OPS]))
    return h @ w3


def make_batch(seed, size=8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 3, generator=gen, dtype=torch.float64)
    domains = torch.arange(size) % NUM_DOMAINS
    y = torch.randn(size, 1, generator=gen, dtype=torch.float64)
    return x, domains, y


TRAIN = make_batch(101)
VAL = make_batch(202)


def make_model(seed=0, dropout=0.0):
    return TinyNet(seed, dropout=dropout).double()


def closures(model):
    def train_loss():
        x, d, y = TRAIN
        return F.mse_loss(model(x, d), y)

    def val_loss():
        x, d, y = VAL
        return F.mse_loss(model(x, d), y)

    return train_loss, val_loss


def ref_loss(ws, alpha, batch, mask=None):
    x, d, y = batch
    return F.mse_loss(reference_forward(ws, alpha, x, d, mask), y)
