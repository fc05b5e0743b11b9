"""fairseq model ``mdnas_transformer``: a searchable encoder-decoder Transformer for translation.

Thin glue over :class:`mdnas_fairseq.cells.transformer_mt.SearchableTransformerMT` (the network and
its search space, ``transformer_mt``, are described there and in ``docs/translation.md``): without
``--genotype`` the search model, with ``--genotype FILE`` the derived concordant multimodel,
``--shared-architecture`` the union baseline, as for ``mdnas_transformer_lm``.

The candidates are fairseq's modules where fairseq has them, as in ``mdnas_transformer_lm``:
``MultiheadAttention`` (bidirectional with the source's ``key_padding_mask`` in the encoder, causal
in the decoder, ``encoder_decoder_attention`` for the fixed cross-attention) and the lightweight
convolution block around ``LightweightConv1dTBC`` (``padding_l = (k - 1) // 2`` in the encoder,
``k - 1`` in the decoder). Incremental decoding (``fairseq-generate``, ``fairseq-interactive``,
``--eval-bleu``): attention keeps its keys and values and the lightweight convolution its input
buffer, both through fairseq's own incremental state; the depthwise convolution, written here,
keeps its last k - 1 inputs with fairseq's ``with_incremental_state`` helpers
(:class:`IncrementalDepthwiseConv`, shared with ``mdnas_transformer_lm``, whose generation uses the
same modules); the feed-forward blocks and identity are position-wise.

One network serves both halves: the decoder owns it (its parameters are ``decoder.net.*``, and
fairseq's beam search finds every module's ``reorder_incremental_state`` there); the encoder holds
a reference. Source, target and output share one embedding, so the task requires a joined
dictionary. Named sizes: ``mdnas_transformer_tiny`` (tests), ``_small``, ``_base``.
"""

import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from fairseq.models import (
    ARCH_MODEL_REGISTRY,
    MODEL_REGISTRY,
    FairseqEncoder,
    FairseqEncoderDecoderModel,
    FairseqIncrementalDecoder,
    register_model,
    register_model_architecture,
)
from fairseq.modules import LightweightConv1dTBC, MultiheadAttention, PositionalEmbedding
from fairseq.utils import safe_getattr

from ..cells.transformer_mt import (
    SPACE_NAME,
    SearchableTransformerMT,
    describe_mt_space,
    transformer_mt_space,
)
from ..cells.transformer_ops import LightConvBlock, build_common_candidate, kernel_of
from ..registry import register_once
from ..search import annealed_temperature, load_genotype
from .language_model import LanguageModelSearchConfig, dictionary_fingerprint
from .mdnas_transformer_lm import (
    FutureMask,
    IncrementalCausalSelfAttention,
    IncrementalDepthwiseConv,
)
from .searchable import SearchableModel, genotype_for_model

logger = logging.getLogger(__name__)


@dataclass
class MDNASTransformerMTConfig(LanguageModelSearchConfig):
    encoder_layers: int = field(default=6, metadata={"help": "encoder layers (two slots each)"})
    decoder_layers: int = field(
        default=6, metadata={"help": "decoder layers (two slots and a cross-attention each)"}
    )
    embed_dim: int = field(
        default=512, metadata={"help": "model width (one embedding: source, target, output)"}
    )
    ffn_embed_dim: int = field(
        default=2048, metadata={"help": "hidden size of the feed-forward candidates"}
    )
    attention_heads: int = field(
        default=8, metadata={"help": "heads of attention and lightweight convolutions"}
    )
    conv_kernel_sizes: str = field(
        default="3,7",
        metadata={"help": "widths of the lightweight and depthwise convolution candidates"},
    )
    learned_pos: bool = field(
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
    max_source_positions: int = field(default=1024, metadata={"help": "longest source sentence"})


def kernel_sizes(cfg):
    try:
        return tuple(int(k) for k in str(cfg.conv_kernel_sizes).split(",") if k.strip())
    except ValueError:
        raise ValueError(
            f"--conv-kernel-sizes must be comma-separated integers, got {cfg.conv_kernel_sizes!r}"
        ) from None


class EncoderSelfAttention(nn.Module):
    """fairseq's ``MultiheadAttention`` over the whole source, pads masked as keys."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attn = MultiheadAttention(dim, heads, dropout=dropout, self_attention=True)

    def forward(self, x, padding_mask=None):
        out, _ = self.attn(
            query=x, key=x, value=x, key_padding_mask=padding_mask, need_weights=False
        )
        return out


class CrossAttention(nn.Module):
    """fairseq's encoder-decoder ``MultiheadAttention`` (keys and values computed once per sentence
    when decoding incrementally, ``static_kv``)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attn = MultiheadAttention(
            dim, heads, kdim=dim, vdim=dim, dropout=dropout, encoder_decoder_attention=True
        )

    def forward(self, x, memory, memory_padding_mask=None, incremental_state=None):
        out, _ = self.attn(
            query=x,
            key=memory,
            value=memory,
            key_padding_mask=memory_padding_mask,
            incremental_state=incremental_state,
            static_kv=True,
            need_weights=False,
        )
        return out


def lightconv_block(cfg, k: int, padding_l: int) -> LightConvBlock:
    conv = LightweightConv1dTBC(
        cfg.embed_dim,
        kernel_size=k,
        padding_l=padding_l,
        num_heads=cfg.attention_heads,
        weight_dropout=cfg.weight_dropout,
        weight_softmax=True,
        bias=False,
    )
    return LightConvBlock(cfg.embed_dim, conv)


def encoder_candidates(cfg):
    """Bidirectional candidates: they take the source's ``padding_mask``."""

    def build(name: str) -> nn.Module:
        module = build_common_candidate(
            name, cfg.embed_dim, cfg.ffn_embed_dim, cfg.activation_dropout, causal=False
        )
        if module is not None:
            return module
        if name == "attention":
            return EncoderSelfAttention(cfg.embed_dim, cfg.attention_heads, cfg.attention_dropout)
        if name.startswith("lightconv_"):
            k = kernel_of(name, "lightconv_")
            return lightconv_block(cfg, k, (k - 1) // 2)
        raise ValueError(f"unknown Transformer candidate operation {name!r}")

    return build


def decoder_candidates(cfg):
    """Causal candidates, each able to decode incrementally."""
    future_mask = FutureMask()

    def build(name: str) -> nn.Module:
        if name.startswith("dwconv_"):
            return IncrementalDepthwiseConv(cfg.embed_dim, kernel_of(name, "dwconv_"))
        module = build_common_candidate(
            name, cfg.embed_dim, cfg.ffn_embed_dim, cfg.activation_dropout
        )
        if module is not None:
            return module
        if name == "attention":
            return IncrementalCausalSelfAttention(
                cfg.embed_dim, cfg.attention_heads, cfg.attention_dropout, future_mask
            )
        if name.startswith("lightconv_"):
            k = kernel_of(name, "lightconv_")
            return lightconv_block(cfg, k, k - 1)
        raise ValueError(f"unknown Transformer candidate operation {name!r}")

    return build


class SearchableEncoder(FairseqEncoder):
    """The encoder half of the network (held by reference; the decoder owns it)."""

    def __init__(self, dictionary, net, max_positions: int):
        super().__init__(dictionary)
        self._net = [net]  # a list: not registered here (its parameters are the decoder's)
        self.max_source_positions = max_positions

    @property
    def net(self):
        return self._net[0]

    def forward(self, src_tokens, src_lengths=None, domain=None, batch_domain=None, **kwargs):
        if domain is None:
            raise ValueError(
                "mdnas_transformer needs the domain of every sentence (net_input['domain']); "
                "load the data with --task multidomain_nas_translation"
            )
        return self.net.encode(src_tokens, domain.to(src_tokens.device), batch_domain)

    def reorder_encoder_out(self, encoder_out, new_order):
        pad = encoder_out["encoder_padding_mask"]
        return {
            "encoder_out": encoder_out["encoder_out"].index_select(1, new_order),
            "encoder_padding_mask": None if pad is None else pad.index_select(0, new_order),
            "domain": encoder_out["domain"].index_select(0, new_order),
            "batch_domain": encoder_out["batch_domain"],
        }

    def max_positions(self):
        return self.max_source_positions


class SearchableIncrementalDecoder(FairseqIncrementalDecoder):
    """The decoder half; owns the network."""

    def __init__(self, dictionary, net, max_positions: int):
        super().__init__(dictionary)
        self.net = net
        self.max_target_positions = max_positions
        net.register_buffer(
            "dictionary_fingerprint", torch.tensor(dictionary_fingerprint(dictionary))
        )

    def forward(
        self, prev_output_tokens, encoder_out=None, incremental_state=None, features_only=False,
        **kwargs,
    ):  # fmt: skip
        logits, features = self.net.decode(prev_output_tokens, encoder_out, incremental_state)
        return (features if features_only else logits), {"attn": [None], "states": features}

    def max_positions(self):
        return self.max_target_positions


class MDNASTransformerMTModel(SearchableModel, FairseqEncoderDecoderModel):
    def __init__(self, encoder, decoder, cfg):
        super().__init__(encoder, decoder)
        self.cfg = cfg

    @property
    def network(self):
        return self.decoder.net

    def forward(self, src_tokens, src_lengths, prev_output_tokens, domain=None, **kwargs):
        encoder_out = self.encoder(src_tokens, src_lengths, domain=domain, **kwargs)
        return self.decoder(prev_output_tokens, encoder_out=encoder_out)

    def domain_representation(self, net_output, sample):
        raise ValueError(
            "the contrastive term (--contrastive-coef) does not apply to translation domains "
            "(their sentences are not translations of each other's)"
        )

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        net, cfg = self.network, self.cfg
        net.gumbel = cfg.gumbel_softmax
        net.temperature = (
            annealed_temperature(
                num_updates, cfg.max_update, cfg.temperature_start, cfg.temperature_end
            )
            if (cfg.max_update or 0) > 0
            else cfg.temperature_start
        )

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        key = "decoder.net.dictionary_fingerprint"
        if key in state_dict and int(state_dict[key]) != int(self.network.dictionary_fingerprint):
            raise ValueError(
                "checkpoint was trained with a different dictionary than this data directory's "
                f"joined dictionary ({len(self.decoder.dictionary)} types here); use the data-bin "
                "the model was trained on"
            )
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    @classmethod
    def build_model(cls, cfg, task):
        domains = list(task.domain_names)
        space = transformer_mt_space(cfg.encoder_layers, cfg.decoder_layers, kernel_sizes(cfg))
        if cfg.genotype and not cfg.genotype_data:
            found = load_genotype(cfg.genotype).space
            if found.name != SPACE_NAME:
                raise ValueError(
                    f"--genotype {cfg.genotype}: a genotype of search space {found.name!r} (e.g. a "
                    f"language-model search); mdnas_transformer needs one derived from a "
                    f"translation search (space {SPACE_NAME!r}, --task multidomain_nas_translation)"
                )
            if found != space:
                raise ValueError(
                    f"--genotype {cfg.genotype}: made for {describe_mt_space(found)}; this model "
                    f"has {describe_mt_space(space)} (give the search's --encoder-layers, "
                    "--decoder-layers and --conv-kernel-sizes)"
                )
        genotype = genotype_for_model(cfg, domains, space)
        dictionary = task.source_dictionary

        def positions(n):
            return PositionalEmbedding(n, cfg.embed_dim, dictionary.pad(), learned=cfg.learned_pos)

        net = SearchableTransformerMT(
            vocab_size=len(dictionary),
            padding_idx=dictionary.pad(),
            embed_dim=cfg.embed_dim,
            encoder_layers=cfg.encoder_layers,
            decoder_layers=cfg.decoder_layers,
            domains=domains,
            encoder_candidates=encoder_candidates(cfg),
            decoder_candidates=decoder_candidates(cfg),
            cross_attention=lambda: CrossAttention(
                cfg.embed_dim, cfg.attention_heads, cfg.attention_dropout
            ),
            kernel_sizes=kernel_sizes(cfg),
            encoder_positions=positions(cfg.max_source_positions),
            decoder_positions=positions(cfg.max_target_positions),
            genotype=genotype,
            shared_architecture=cfg.shared_architecture,
            dropout=cfg.dropout,
            scale_embedding=not cfg.no_scale_embedding,
            alpha_init_scale=cfg.alpha_init_scale,
        )
        encoder = SearchableEncoder(dictionary, net, cfg.max_source_positions)
        decoder = SearchableIncrementalDecoder(
            task.target_dictionary, net, cfg.max_target_positions
        )
        model = cls(encoder, decoder, cfg)
        if genotype is not None:
            logger.info(
                f"derived multimodel: {sum(p.numel() for p in model.parameters())} parameters "
                f"(genotype count {net.genotype_param_count(genotype)})"
            )
        return model


def _sizes(args, enc, dec, dim, ffn, heads):
    args.encoder_layers = safe_getattr(args, "encoder_layers", enc)
    args.decoder_layers = safe_getattr(args, "decoder_layers", dec)
    args.embed_dim = safe_getattr(args, "embed_dim", dim)
    args.ffn_embed_dim = safe_getattr(args, "ffn_embed_dim", ffn)
    args.attention_heads = safe_getattr(args, "attention_heads", heads)
    args.dropout = safe_getattr(args, "dropout", 0.1)


def mdnas_transformer_tiny(args):
    _sizes(args, 2, 2, 64, 256, 4)


def mdnas_transformer_small(args):
    _sizes(args, 3, 3, 256, 1024, 4)


def mdnas_transformer_base(args):
    _sizes(args, 6, 6, 512, 2048, 8)


register_once(
    MODEL_REGISTRY,
    "mdnas_transformer",
    lambda: register_model("mdnas_transformer", dataclass=MDNASTransformerMTConfig)(
        MDNASTransformerMTModel
    ),
)
for _preset in (mdnas_transformer_tiny, mdnas_transformer_small, mdnas_transformer_base):
    register_once(
        ARCH_MODEL_REGISTRY,
        _preset.__name__,
        lambda p=_preset: register_model_architecture("mdnas_transformer", p.__name__)(p),
    )
