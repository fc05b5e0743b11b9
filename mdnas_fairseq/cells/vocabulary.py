"""A language model's tied vocabulary, extended in blocks (pure PyTorch).

The networks' input embedding is tied to their output projection: ``embedding.weight`` (V, C)
(and, for the recurrent model, ``output_bias`` (V,)). An extension to more domains appends entries
to the dictionary (the new language's own pieces): they get a block of their own, (n, C) rows
(and n biases), kept in :class:`AppendedVocabulary`, while the old entries stay the old tensors.
So the old rows can be frozen on their own (a separate tensor that does not require gradients:
no optimizer holds it, no weight decay moves it), and the logits of the old entries are the same
matrix product, of the same shapes, as before the extension: bit for bit the same numbers.

Each block has a first domain: the domains added with it (and later ones) may emit its entries;
the domains before never do (their data was written with the old dictionary), so their logits
over those entries are ``-inf``. The entries a domain may emit are therefore a prefix of the
vocabulary, of length :meth:`TiedVocabulary.vocabulary_limit`; normalising a domain's logits over
that prefix alone (``log_softmax(logits[..., :limit])``) is the old model's computation, of the
same shape: a log-softmax over the old entries followed by ``-inf`` ones is not bitwise that on
every kernel (PyTorch's CPU kernel differs in the last bit for about 1% of (vocabulary, padding)
sizes), so the fairseq decoder normalises over the prefix.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

VocabularyBlocks = Sequence[Tuple[int, int]]  # (entries, first domain) of each appended block


class AppendedVocabulary(nn.Module):
    """The entries appended to a dictionary by extensions: one block per extension.

    Args:
        dim: C, the embedding width.
        blocks: (entries, first domain) of each block, in dictionary order; first domains grow.
        bias: give each block output biases (the recurrent model's ``output_bias``).
        init: initialises a new (entries, C) block in place (the network's own embedding init).
    """

    def __init__(
        self, dim: int, blocks: VocabularyBlocks, bias: bool, init: Callable[[Tensor], object]
    ):
        super().__init__()
        blocks = [(int(n), int(d)) for n, d in blocks]
        if any(n < 1 or d < 1 for n, d in blocks):
            raise ValueError(
                f"appended vocabulary blocks need >= 1 entry and a first domain >= 1, got {blocks}"
            )
        if any(a[1] >= b[1] for a, b in zip(blocks, blocks[1:])):
            raise ValueError(
                f"appended vocabulary blocks must have growing first domains: {blocks}"
            )
        self.sizes: List[int] = [n for n, _ in blocks]
        self.first_domains: List[int] = [d for _, d in blocks]
        weights = []
        for n in self.sizes:
            w = torch.empty(n, dim)
            init(w)
            weights.append(nn.Parameter(w))
        self.weights = nn.ParameterList(weights)
        self.biases = (
            nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in self.sizes) if bias else None
        )

    def entries(self) -> int:
        return sum(self.sizes)

    def limit(self, base: int, domain: int) -> int:
        """Entries domain ``domain`` may emit, given ``base`` entries before the first block."""
        return base + sum(n for n, d in zip(self.sizes, self.first_domains) if d <= domain)

    def logits(
        self, x: Tensor, base_logits: Tensor, domain: Tensor, batch_domain: Optional[int]
    ) -> Tensor:
        """``base_logits`` (..., V0) followed by every block's, ``-inf`` where the sample's domain
        precedes the block (``batch_domain``: the batch's one domain, known on the host; else
        ``domain`` (B,) per sample, x being (B, ..., C))."""
        out = [base_logits]
        for k, (n, first) in enumerate(zip(self.sizes, self.first_domains)):
            if batch_domain is not None and batch_domain < first:
                out.append(base_logits.new_full(base_logits.shape[:-1] + (n,), float("-inf")))
                continue
            bias = self.biases[k] if self.biases is not None else None
            block = F.linear(x, self.weights[k], bias)
            if batch_domain is None:
                before = (domain < first).view(-1, *([1] * (block.dim() - 1)))
                block = block.masked_fill(before, float("-inf"))
            out.append(block)
        return torch.cat(out, dim=-1)


class TiedVocabulary:
    """Mixin of the language networks: ``embedding`` (nn.Embedding of the first dictionary), an
    optional ``output_bias`` and ``appended_vocabulary`` (an :class:`AppendedVocabulary`, or None
    for a network that was never extended)."""

    appended_vocabulary: Optional[AppendedVocabulary]

    def init_appended_vocabulary(
        self, dim: int, blocks: VocabularyBlocks, bias: bool, init: Callable[[Tensor], object]
    ) -> None:
        self.appended_vocabulary = AppendedVocabulary(dim, blocks, bias, init) if blocks else None

    @staticmethod
    def base_vocabulary_size(vocab_size: int, blocks: VocabularyBlocks) -> int:
        """Entries of the first dictionary, given the whole dictionary's ``vocab_size``."""
        base = vocab_size - sum(int(n) for n, _ in blocks)
        if base < 1:
            raise ValueError(
                f"a dictionary of {vocab_size} entries cannot hold appended blocks {list(blocks)}"
            )
        return base

    def vocabulary_weight(self) -> Tensor:
        """The whole (V, C) embedding matrix: the first dictionary's rows, then every block's."""
        if self.appended_vocabulary is None:
            return self.embedding.weight
        return torch.cat([self.embedding.weight, *self.appended_vocabulary.weights])

    def vocabulary_limit(self, domain: int) -> int:
        """Entries domain ``domain`` may emit: a prefix of the vocabulary (module docstring)."""
        base = self.embedding.weight.shape[0]
        if self.appended_vocabulary is None:
            return base
        return self.appended_vocabulary.limit(base, domain)

    def output_logits(self, x: Tensor, domain: Tensor, batch_domain: Optional[int]) -> Tensor:
        """Logits (..., V) of features ``x`` (..., C) under the tied projection (module docstring)."""
        logits = F.linear(x, self.embedding.weight, getattr(self, "output_bias", None))
        if self.appended_vocabulary is None:
            return logits
        return self.appended_vocabulary.logits(x, logits, domain, batch_domain)

    def vocabulary_param_count(self) -> int:
        count = self.embedding.weight.numel()
        if getattr(self, "output_bias", None) is not None:
            count += self.output_bias.numel()
        if self.appended_vocabulary is not None:
            count += sum(p.numel() for p in self.appended_vocabulary.parameters())
        return count
