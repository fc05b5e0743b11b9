"""fairseq model ``mdnas_transformer_lm``: a searchable decoder-only Transformer language model.

Thin glue over :class:`mdnas_fairseq.cells.transformer.SearchableTransformerLM` (the network,
the search space and the cell design are described there and in ``docs/transformer.md``):

* without ``--genotype`` it is the search model (per-domain alpha over every slot's candidates);
* with ``--genotype FILE`` it is the derived concordant multimodel of that genotype;
* ``--shared-architecture`` gives the "single model on the union of domains" baseline.

The candidates come from fairseq where fairseq has them: ``attention`` is fairseq's
``MultiheadAttention`` (``self_attention=True``) under a causal (upper-triangular -inf) mask, as
in fairseq's ``TransformerDecoder`` (given a ``padding_mask``, it also keeps real tokens from
attending to pads); ``lightconv_k`` is fairseq's lightweight-convolution block around
``LightweightConv1dTBC`` with ``padding_l = k - 1`` (causal, tested; given a ``padding_mask``, its
input is zeroed at pads). The network itself needs no mask: it moves left padding to the end
(:class:`~mdnas_fairseq.cells.transformer.SearchableTransformerLM`). The class is used
directly rather than through the ``LightweightConv`` factory, which on a CUDA machine switches to
the ``lightconv_cuda`` extension when it is built and prints an ImportError for every module when
it is not (fairseq-fixed ships it unbuilt); the two compute the same function. Positions are
fairseq's ``PositionalEmbedding`` (sinusoidal, or learned with ``--decoder-learned-pos``).

Generation (``fairseq-generate``, ``fairseq-interactive``) decodes incrementally with the
translation decoder's modules (:class:`IncrementalCausalSelfAttention`,
:class:`IncrementalDepthwiseConv`, the lightweight convolution's own buffer); the task gives the
decoder the batch's domain (``docs/language-models.md``, "Sampling").

Named sizes: ``mdnas_transformer_lm_tiny`` (tests: 2 layers, 64 dims), ``_small``, ``_base``.
"""

import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from fairseq.incremental_decoding_utils import with_incremental_state
from fairseq.models import (
    ARCH_MODEL_REGISTRY,
    MODEL_REGISTRY,
    register_model,
    register_model_architecture,
)
from fairseq.modules import LightweightConv1dTBC, MultiheadAttention, PositionalEmbedding
from fairseq.utils import safe_getattr

from ..cells.transformer import SearchableTransformerLM
from ..cells.transformer_ops import (
    CausalDepthwiseConv,
    LightConvBlock,
    attention_blocked,
    build_common_candidate,
    causal_conv_tbc,
    kernel_of,
)
from ..registry import register_once
from ..search import transformer_lm_space
from .language_model import LanguageModelSearchConfig, SearchableDecoder, SearchableLanguageModel
from .searchable import ModelExtension, genotype_for_model

logger = logging.getLogger(__name__)


@dataclass
class MDNASTransformerConfig(LanguageModelSearchConfig):
    decoder_layers: int = field(
        default=6, metadata={"help": "layers (each a token-mixing and a channel-mixing slot)"}
    )
    decoder_embed_dim: int = field(
        default=512, metadata={"help": "model width (embeddings are tied)"}
    )
    decoder_ffn_embed_dim: int = field(
        default=2048, metadata={"help": "hidden size of the feed-forward candidates"}
    )
    decoder_attention_heads: int = field(
        default=8, metadata={"help": "heads of attention and lightweight convolutions"}
    )
    decoder_conv_kernel_sizes: str = field(
        default="3,7",
        metadata={"help": "widths of the lightweight and depthwise convolution candidates"},
    )
    decoder_learned_pos: bool = field(
        default=False, metadata={"help": "learned (not sinusoidal) positions"}
    )
    no_scale_embedding: bool = field(
        default=False, metadata={"help": "do not scale the embeddings by sqrt(dim)"}
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings and slot outputs"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(
        default=0.0, metadata={"help": "dropout after the feed-forward activation"}
    )
    weight_dropout: float = field(
        default=0.0, metadata={"help": "dropout on lightweight-convolution kernels"}
    )


def kernel_sizes(cfg):
    try:
        return tuple(int(k) for k in str(cfg.decoder_conv_kernel_sizes).split(",") if k.strip())
    except ValueError:
        raise ValueError(
            f"--decoder-conv-kernel-sizes must be comma-separated integers, got {cfg.decoder_conv_kernel_sizes!r}"
        ) from None


class FutureMask:
    """fairseq's ``TransformerDecoder.buffered_future_mask`` (-inf above the diagonal), shared by all
    the attention modules of one model: one (N, N) mask, grown on demand and sliced to (T, T), so
    the layers' attention keep one mask for the backward pass between them, as fairseq's
    ``transformer_lm`` does, rather than one (T, T) mask each (4 T bytes per token per layer of a
    batch of one T-token sentence)."""

    def __init__(self):
        self.mask = None

    def __call__(self, steps: int, device, dtype) -> torch.Tensor:
        mask = self.mask
        if mask is None or mask.shape[0] < steps or mask.device != device or mask.dtype != dtype:
            mask = torch.full((steps, steps), float("-inf"), device=device).triu(1).to(dtype)
            self.mask = mask
        return mask[:steps, :steps]


class FairseqCausalSelfAttention(nn.Module):
    """fairseq's ``MultiheadAttention`` as a causal self-attention candidate (T, B, C) -> (T, B, C).

    Without padding the mask is fairseq's ``TransformerDecoder.buffered_future_mask`` (-inf above
    the diagonal). With a ``padding_mask`` (B, T) it is one (T, T) mask per sample and head
    (``attn_mask`` of shape (B H, T, T), which fairseq hands to PyTorch's attention): the future and,
    for real queries, the pad keys (:func:`attention_blocked`). It is not fairseq's
    ``key_padding_mask``, which also blocks every key of a pad query when the sentence is
    left-padded: a row of -inf, whose softmax is NaN unless the attention kernel special-cases it
    (PyTorch's CPU kernels of 2.5+ return 0; not every backend or version does).
    """

    def __init__(self, dim: int, heads: int, dropout: float, future_mask: FutureMask = None):
        super().__init__()
        self.heads = heads
        self.future_mask = future_mask if future_mask is not None else FutureMask()
        self.attn = MultiheadAttention(dim, heads, dropout=dropout, self_attention=True)

    def forward(self, x, padding_mask=None):
        if padding_mask is None:
            mask = self.future_mask(x.shape[0], x.device, x.dtype)
        else:  # (B, T, T) -> (B H, T, T), sample-major as fairseq's heads
            blocked = attention_blocked(x.shape[0], padding_mask, x.device)
            mask = torch.zeros(blocked.shape, dtype=x.dtype, device=x.device).masked_fill(
                blocked, float("-inf")
            )
            mask = mask.repeat_interleave(self.heads, dim=0)
        out, _ = self.attn(query=x, key=x, value=x, need_weights=False, attn_mask=mask)
        return out


@with_incremental_state
class IncrementalDepthwiseConv(CausalDepthwiseConv):
    """The causal depthwise convolution with an input buffer for incremental decoding: a step
    convolves the new inputs with the last k - 1 (fewer at the start: the zeros of the full pass)."""

    def forward(self, x, padding_mask=None, incremental_state=None):
        if incremental_state is None:
            return super().forward(x, padding_mask)
        state = self.get_incremental_state(incremental_state, "conv_state")
        window = x if state is None else torch.cat([state["inputs"], x], dim=0)
        if self.kernel_size > 1:
            kept = window[-(self.kernel_size - 1) :]
            self.set_incremental_state(incremental_state, "conv_state", {"inputs": kept})
        return causal_conv_tbc(window, self.weight, self.bias)[-x.shape[0] :]

    def reorder_incremental_state(self, incremental_state, new_order):
        state = self.get_incremental_state(incremental_state, "conv_state")
        if state is not None:
            state = {"inputs": state["inputs"].index_select(1, new_order)}
            self.set_incremental_state(incremental_state, "conv_state", state)


class IncrementalCausalSelfAttention(FairseqCausalSelfAttention):
    """The language model's causal attention; a decoding step attends to the cached keys/values."""

    def forward(self, x, padding_mask=None, incremental_state=None):
        if incremental_state is None:
            return super().forward(x, padding_mask)
        out, _ = self.attn(
            query=x, key=x, value=x, incremental_state=incremental_state, need_weights=False
        )
        return out


def fairseq_candidates(cfg):
    """The candidate factory of the fairseq model: fairseq's modules where fairseq has them; every
    token mixer decodes incrementally (attention and the lightweight convolution through fairseq's
    incremental state, the depthwise convolution with :class:`IncrementalDepthwiseConv`), the
    channel mixers are position-wise."""
    dim, heads = cfg.decoder_embed_dim, cfg.decoder_attention_heads
    future_mask = FutureMask()  # one causal mask for all the attention modules of the model

    def build(name: str) -> nn.Module:
        if name.startswith("dwconv_"):
            return IncrementalDepthwiseConv(dim, kernel_of(name, "dwconv_"))
        module = build_common_candidate(
            name, dim, cfg.decoder_ffn_embed_dim, cfg.activation_dropout
        )
        if module is not None:
            return module
        if name == "attention":
            return IncrementalCausalSelfAttention(dim, heads, cfg.attention_dropout, future_mask)
        if name.startswith("lightconv_"):
            k = kernel_of(name, "lightconv_")
            conv = LightweightConv1dTBC(
                dim,
                kernel_size=k,
                padding_l=k - 1,
                num_heads=heads,
                weight_dropout=cfg.weight_dropout,
                weight_softmax=True,
                bias=False,
            )
            return LightConvBlock(dim, conv)
        raise ValueError(f"unknown Transformer candidate operation {name!r}")

    return build


class MDNASTransformerModel(SearchableLanguageModel):
    @classmethod
    def build_model(cls, cfg, task):
        domains = list(task.domain_names)
        genotype = genotype_for_model(
            cfg, domains, transformer_lm_space(cfg.decoder_layers, kernel_sizes(cfg))
        )
        dictionary = task.source_dictionary
        positions = PositionalEmbedding(
            cfg.max_target_positions,
            cfg.decoder_embed_dim,
            dictionary.pad(),
            learned=cfg.decoder_learned_pos,
        )
        lm = SearchableTransformerLM(
            vocab_size=len(dictionary),
            padding_idx=dictionary.pad(),
            embed_dim=cfg.decoder_embed_dim,
            num_layers=cfg.decoder_layers,
            domains=domains,
            candidates=fairseq_candidates(cfg),
            kernel_sizes=kernel_sizes(cfg),
            positions=positions,
            genotype=genotype,
            shared_architecture=cfg.shared_architecture,
            dropout=cfg.dropout,
            scale_embedding=not cfg.no_scale_embedding,
            alpha_init_scale=cfg.alpha_init_scale,
            **ModelExtension.of(cfg).network_options(cfg),
        )
        model = cls(
            SearchableDecoder(dictionary, lm, cfg.max_target_positions, "mdnas_transformer_lm"), cfg
        )
        if genotype is not None:
            logger.info(
                f"derived multimodel: {sum(p.numel() for p in model.parameters())} parameters "
                f"(genotype count {lm.genotype_param_count(genotype)})"
            )
        return model


def _sizes(args, layers, dim, ffn, heads, dropout):
    args.decoder_layers = safe_getattr(args, "decoder_layers", layers)
    args.decoder_embed_dim = safe_getattr(args, "decoder_embed_dim", dim)
    args.decoder_ffn_embed_dim = safe_getattr(args, "decoder_ffn_embed_dim", ffn)
    args.decoder_attention_heads = safe_getattr(args, "decoder_attention_heads", heads)
    args.dropout = safe_getattr(args, "dropout", dropout)


def mdnas_transformer_lm_tiny(args):
    _sizes(args, 2, 64, 256, 4, 0.1)


def mdnas_transformer_lm_small(args):
    _sizes(args, 4, 256, 1024, 4, 0.1)


def mdnas_transformer_lm_base(args):
    _sizes(args, 6, 512, 2048, 8, 0.1)


register_once(
    MODEL_REGISTRY,
    "mdnas_transformer_lm",
    lambda: register_model("mdnas_transformer_lm", dataclass=MDNASTransformerConfig)(
        MDNASTransformerModel
    ),
)
for _preset in (mdnas_transformer_lm_tiny, mdnas_transformer_lm_small, mdnas_transformer_lm_base):
    register_once(
        ARCH_MODEL_REGISTRY,
        _preset.__name__,
        lambda p=_preset: register_model_architecture("mdnas_transformer_lm", p.__name__)(p),
    )
