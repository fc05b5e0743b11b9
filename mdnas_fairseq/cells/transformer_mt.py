"""A searchable encoder-decoder Transformer for translation, one architecture per domain (pure PyTorch).

The layers are those of :mod:`.transformer` (pre-LayerNorm residual slots, each a token-mixing or
a channel-mixing choice), in an encoder and a decoder:

* encoder layer l: a token slot (bidirectional self-attention, centred lightweight and depthwise
  convolutions, identity) and a channel slot (the feed-forward variants, identity);
* decoder layer l: a token slot (the causal candidates of the language model), a FIXED
  cross-attention block ``x + dropout(cross(LayerNorm(x), encoder states))`` and a channel slot.

Source, target and output share one embedding (a joined dictionary); the encoder and the decoder
end with a LayerNorm. The search space is :func:`transformer_mt_space`: two chains of slots, one
from the source embedding (state 0), one from the target embedding (state 1).

Incremental decoding: ``decode(..., incremental_state=dict)`` takes the last target token only and
passes the dict to the positions, every decoder token candidate and the cross-attention, which
keep their own state in it (attention keys and values, convolution input buffers); the
candidates also provide ``reorder_incremental_state``, which fairseq's beam search calls. The
candidate factories decide how (the fairseq model uses fairseq's incremental-state helpers).

Padding: the encoder's candidates get the source's padding mask (attention never attends to a
pad, convolutions zero pads, so a left-padded source is encoded as if alone); the decoder's
target is right-padded (fairseq's translation batches), which causal candidates never see.

Derived mode runs one domain per batch (every batch the tasks make holds one domain).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..search import (
    TRANSFORMER_CHANNEL_OPS,
    GenotypeEdge,
    MultiDomainGenotype,
    ParamTable,
    SearchSpace,
    transformer_token_ops,
)
from .network import MultiDomainNetwork
from .transformer_ops import CandidateFactory
from .vocabulary import TiedVocabulary

SPACE_NAME = "transformer_mt"
# cross(x (T, B, C), memory (S, B, C), memory_padding_mask (B, S) or None, incremental_state) -> (T, B, C)
CrossAttentionFactory = Callable[[], nn.Module]


def transformer_mt_space(
    encoder_layers: int, decoder_layers: int, kernel_sizes: Sequence[int] = (3, 7)
) -> SearchSpace:
    """Two chains of slots: state 0 (source embedding) -> encoder nodes 2 .. 2Le + 1, state 1 (target
    embedding) -> decoder nodes 2Le + 2 .. 2Le + 2Ld + 1; in each chain the slots alternate token
    mixing, channel mixing (edge e ends at node e + 2). K and the kinds as in ``transformer_lm_space``."""
    if encoder_layers < 1 or decoder_layers < 1:
        raise ValueError(
            f"a translation Transformer needs at least one encoder and one decoder layer, got "
            f"{encoder_layers} and {decoder_layers}"
        )
    token, channel = transformer_token_ops(kernel_sizes), TRANSFORMER_CHANNEL_OPS
    operations = token + tuple(op for op in channel if op not in token)
    enc, dec = 2 * encoder_layers, 2 * decoder_layers
    topology = [(0 if j == 2 else j - 1, j) for j in range(2, enc + 2)]
    topology += [(1 if j == enc + 2 else j - 1, j) for j in range(enc + 2, enc + dec + 2)]
    allowed = [token if (e if e < enc else e - enc) % 2 == 0 else channel for e in range(enc + dec)]
    return SearchSpace(
        SPACE_NAME,
        operations,
        num_input_nodes=2,
        num_nodes=enc + dec,
        edges_per_node=1,
        topology=tuple(topology),
        allowed_ops=tuple(allowed),
    )


def describe_mt_space(space: SearchSpace) -> str:
    """``"L encoder + M decoder layers, kernels 3,7"`` of a :func:`transformer_mt_space`."""
    decoder_start = next(j for i, j in space.edges if i == 1)
    encoder_edges = decoder_start - 2
    kernels = [op[len("lightconv_") :] for op in space.operations if op.startswith("lightconv_")]
    return (
        f"{encoder_edges // 2} encoder + {(space.num_edges - encoder_edges) // 2} decoder layers, "
        f"kernels {','.join(kernels)}"
    )


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class SearchableTransformerMT(TiedVocabulary, MultiDomainNetwork):
    """Encoder-decoder Transformer whose every slot is searched per domain (module docstring).

    Args:
        vocab_size, padding_idx: the joined dictionary.
        embed_dim: C (one embedding for source, target and output).
        encoder_layers, decoder_layers: Le, Ld.
        domains: the data domains, in the order of the domain indices.
        encoder_candidates, decoder_candidates: op name -> a new module (T, B, C) -> (T, B, C);
            the encoder's take ``padding_mask`` (B, T), the decoder's are causal and take
            ``incremental_state``.
        cross_attention: -> a new cross-attention module (see ``CrossAttentionFactory``).
        encoder_positions, decoder_positions: tokens (B, T) -> (B, T, C) (the decoder's also given
            ``incremental_state``: the last position only), or None.
        genotype, shared_architecture, alpha_init_scale: see :class:`MultiDomainNetwork`.
        dropout, scale_embedding: as in :class:`~.transformer.SearchableTransformerLM`.
    """

    def __init__(
        self,
        vocab_size: int,
        padding_idx: int,
        embed_dim: int,
        encoder_layers: int,
        decoder_layers: int,
        domains: Sequence[str],
        encoder_candidates: CandidateFactory,
        decoder_candidates: CandidateFactory,
        cross_attention: CrossAttentionFactory,
        kernel_sizes: Sequence[int] = (3, 7),
        encoder_positions: Optional[nn.Module] = None,
        decoder_positions: Optional[nn.Module] = None,
        genotype: Optional[MultiDomainGenotype] = None,
        shared_architecture: bool = False,
        dropout: float = 0.0,
        scale_embedding: bool = True,
        alpha_init_scale: float = 1e-3,
    ):
        space = transformer_mt_space(encoder_layers, decoder_layers, kernel_sizes)
        super().__init__(domains, space, genotype, shared_architecture, alpha_init_scale)
        self.embed_dim, self.dropout, self.padding_idx = embed_dim, dropout, padding_idx
        self.encoder_edges = 2 * encoder_layers
        self.embed_scale = math.sqrt(embed_dim) if scale_embedding else 1.0
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=embed_dim**-0.5)
        with torch.no_grad():
            self.embedding.weight[padding_idx].zero_()
        self.appended_vocabulary = None
        self.encoder_positions, self.decoder_positions = encoder_positions, decoder_positions
        self.slot_norms = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in range(space.num_edges))
        self.cross_norms = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in range(decoder_layers))
        self.cross = nn.ModuleList(cross_attention() for _ in range(decoder_layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)
        self.genotype = genotype
        factories = (encoder_candidates, decoder_candidates)

        def build(edge: int, op: str) -> nn.Module:
            return factories[edge >= self.encoder_edges](op)

        if genotype is None:
            self.slot_ops = nn.ModuleList(
                nn.ModuleDict({op: build(e, op) for op in self._weighted(e)})
                for e in range(space.num_edges)
            )
            self.slot_op_index = [
                [space.op_index(op) for op in self._weighted(e)] for e in range(space.num_edges)
            ]
        else:
            self.ops = nn.ModuleDict(
                {self._module_name(e): build(e.node - 2, e.op) for e in genotype.union_edges()}
            )
            self.choices: Dict[str, Dict[int, str]] = {
                d: {e.node - 2: self._module_name(e) for e in genotype.cells[d]}
                for d in genotype.domains
            }
        self._op_sizes = self._candidate_sizes(build)

    def _weighted(self, edge: int):
        return [op for op in self.space.allowed(edge) if op != self.space.none_op]

    @staticmethod
    def _module_name(edge: GenotypeEdge) -> str:
        return f"node{edge.node}_{edge.op}"

    def _candidate_sizes(self, build) -> Dict[tuple, int]:
        """(encoder side?, op) -> parameters of one module (this network's, built once if absent)."""
        sizes = {}
        if self.is_search:
            for e, ops in enumerate(self.slot_ops):
                sizes.update({(e < self.encoder_edges, op): _numel(m) for op, m in ops.items()})
        else:
            for name, m in self.ops.items():
                node, op = name[len("node") :].split("_", 1)
                sizes[(int(node) - 2 < self.encoder_edges, op)] = _numel(m)
        for e in (0, self.encoder_edges):
            for op in self.space.operations:
                if op != self.space.none_op and (e == 0, op) not in sizes:
                    sizes[(e == 0, op)] = _numel(build(e, op))
        return sizes

    # ------------------------------------------------------------------ forward
    def _slot(self, e: int, x: Tensor, routing: dict, **options) -> Tensor:
        """Slot (edge) ``e``: ``x + dropout(op(LayerNorm(x)))``, mixed (search) or the batch's op."""
        h = self.slot_norms[e](x)
        if "mixing_probs" in routing:
            probs, out = routing["mixing_probs"], 0
            for module, k in zip(self.slot_ops[e].values(), self.slot_op_index[e]):
                w = probs[e, k] if probs.dim() == 2 else probs[:, e, k].view(1, -1, 1)
                out = out + w * module(h, **options)
        else:
            out = self.ops[self.choices[routing["cell"]][e]](h, **options)
        return x + F.dropout(out, self.dropout, self.training)

    def _routing(self, domain: Tensor, batch_domain: Optional[int], batch: int, dtype) -> dict:
        routing = self.route(domain, batch_domain, batch, dtype)
        if "cells" in routing:
            cells = sorted(set(routing.pop("cells")))
            if len(cells) != 1:
                raise ValueError(
                    f"a derived translation multimodel runs one domain per batch, got {cells}"
                )
            routing["cell"] = cells[0]
        return routing

    def _embed(self, tokens: Tensor, positions: Optional[Tensor]) -> Tensor:
        x = self.embed_scale * self.embedding(tokens)
        if positions is not None:
            x = x + positions
        return F.dropout(x, self.dropout, self.training).transpose(0, 1)

    def encode(
        self, src_tokens: Tensor, domain: Tensor, batch_domain: Optional[int] = None
    ) -> Dict[str, object]:
        """``src_tokens`` (B, S) -> encoder states (S, B, C), padding mask (B, S) or None, the routing."""
        pad = src_tokens.eq(self.padding_idx)
        pad = pad if bool(pad.any()) else None
        positions = self.encoder_positions(src_tokens) if self.encoder_positions else None
        x = self._embed(src_tokens, positions)
        routing = self._routing(domain, batch_domain, src_tokens.shape[0], x.dtype)
        for e in range(self.encoder_edges):
            x = self._slot(e, x, routing, padding_mask=pad)
        return {
            "encoder_out": self.encoder_norm(x),
            "encoder_padding_mask": pad,
            "domain": domain,
            "batch_domain": batch_domain,
        }

    def decode(
        self, prev_tokens: Tensor, encoder_out: Dict[str, object], incremental_state=None
    ) -> tuple:
        """``prev_tokens`` (B, T) -> (logits (B, T, V), features (B, T, C)); with an
        ``incremental_state`` dict only the last position is computed (T = 1)."""
        positions = None
        if self.decoder_positions is not None:
            options = {} if incremental_state is None else {"incremental_state": incremental_state}
            positions = self.decoder_positions(prev_tokens, **options)
        if incremental_state is not None:
            prev_tokens = prev_tokens[:, -1:]
            positions = positions[:, -1:] if positions is not None else None
        x = self._embed(prev_tokens, positions)
        domain, batch_domain = encoder_out["domain"], encoder_out["batch_domain"]
        routing = self._routing(domain, batch_domain, prev_tokens.shape[0], x.dtype)
        memory, memory_pad = encoder_out["encoder_out"], encoder_out["encoder_padding_mask"]
        step = {} if incremental_state is None else {"incremental_state": incremental_state}
        for layer in range(len(self.cross)):
            e = self.encoder_edges + 2 * layer
            x = self._slot(e, x, routing, **step)
            h = self.cross[layer](self.cross_norms[layer](x), memory, memory_pad, **step)
            x = x + F.dropout(h, self.dropout, self.training)
            x = self._slot(e + 1, x, routing)
        features = self.decoder_norm(x).transpose(0, 1)
        return self.output_logits(features, domain, batch_domain), features

    def forward(
        self,
        src_tokens: Tensor,
        prev_tokens: Tensor,
        domain: Tensor,
        batch_domain: Optional[int] = None,
    ) -> tuple:
        return self.decode(prev_tokens, self.encode(src_tokens, domain, batch_domain))

    # ------------------------------------------------------------------ sizes
    def op_param_count(self, edge: GenotypeEdge) -> int:
        return self._op_sizes[(edge.node - 2 < self.encoder_edges, edge.op)]

    def shared_param_count(self) -> int:
        """Every domain's: the embedding, positions, LayerNorms and the cross-attention blocks."""
        shared = [self.slot_norms, self.cross_norms, self.cross, self.encoder_norm]
        shared += [self.decoder_norm]
        shared += [m for m in (self.encoder_positions, self.decoder_positions) if m is not None]
        return self.vocabulary_param_count() + sum(_numel(m) for m in shared)

    def param_table(self) -> ParamTable:
        rows = [
            [
                self._op_sizes[(e < self.encoder_edges, op)]
                if op in self.space.allowed(e) and op != self.space.none_op
                else 0
                for op in self.space.operations
            ]
            for e in range(self.space.num_edges)
        ]
        return ParamTable(self.space, rows, "edge", self.shared_param_count())
