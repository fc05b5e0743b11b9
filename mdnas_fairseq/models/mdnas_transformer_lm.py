"""fairseq model ``mdnas_transformer_lm``: a searchable decoder-only Transformer language model.

Thin glue over :class:`mdnas_fairseq.cells.transformer.SearchableTransformerLM` (the network,
the search space and the cell design are described there and in ``docs/transformer.md``):

* without ``--genotype`` it is the search model (per-domain alpha over every slot's candidates);
* with ``--genotype FILE`` it is the derived concordant multimodel of that genotype;
* ``--shared-architecture`` gives the "single model on the union of domains" baseline.

The candidates come from fairseq where fairseq has them: ``attention`` is fairseq's
``MultiheadAttention`` (``self_attention=True``) under a causal (upper-triangular -inf) mask, as
in fairseq's ``TransformerDecoder``; ``lightconv_k`` is fairseq's lightweight-convolution block
around ``LightweightConv1dTBC`` with ``padding_l = k - 1`` (causal, tested). The class is used
directly rather than through the ``LightweightConv`` factory, which on a CUDA machine switches to
the ``lightconv_cuda`` extension when it is built and prints an ImportError for every module when
it is not (fairseq-fixed ships it unbuilt); the two compute the same function. Positions are
fairseq's ``PositionalEmbedding`` (sinusoidal, or learned with ``--decoder-learned-pos``).

Named sizes: ``mdnas_transformer_lm_tiny`` (tests: 2 layers, 64 dims), ``_small``, ``_base``.
"""

import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from fairseq.models import (
    ARCH_MODEL_REGISTRY,
    FairseqDecoder,
    FairseqLanguageModel,
    register_model,
    register_model_architecture,
)
from fairseq.modules import LightweightConv1dTBC, MultiheadAttention, PositionalEmbedding
from fairseq.utils import safe_getattr
from omegaconf import II

from ..cells.transformer import SearchableTransformerLM
from ..cells.transformer_ops import LightConvBlock, build_common_candidate, kernel_of
from ..search import annealed_temperature, transformer_lm_space
from .mdnas_rnn import dictionary_fingerprint
from .searchable import ArchitectureConfig, SearchableModel, genotype_for_model

logger = logging.getLogger(__name__)


@dataclass
class MDNASTransformerConfig(ArchitectureConfig):
    decoder_layers: int = field(default=6, metadata={"help": "layers (each a token-mixing and a channel-mixing slot)"})
    decoder_embed_dim: int = field(default=512, metadata={"help": "model width (embeddings are tied)"})
    decoder_ffn_embed_dim: int = field(default=2048, metadata={"help": "hidden size of the feed-forward candidates"})
    decoder_attention_heads: int = field(
        default=8, metadata={"help": "heads of attention and lightweight convolutions"}
    )
    decoder_conv_kernel_sizes: str = field(
        default="3,7", metadata={"help": "widths of the lightweight and depthwise convolution candidates"}
    )
    decoder_learned_pos: bool = field(default=False, metadata={"help": "learned (not sinusoidal) positions"})
    no_scale_embedding: bool = field(default=False, metadata={"help": "do not scale the embeddings by sqrt(dim)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings and slot outputs"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the feed-forward activation"})
    weight_dropout: float = field(default=0.0, metadata={"help": "dropout on lightweight-convolution kernels"})
    gumbel_softmax: bool = field(default=False, metadata={"help": "Gumbel-softmax mixing weights while searching"})
    temperature_start: float = field(default=1.0, metadata={"help": "(Gumbel-)softmax temperature at update 0"})
    temperature_end: float = field(default=1.0, metadata={"help": "temperature at --max-update (exponential)"})
    max_target_positions: int = field(default=1024, metadata={"help": "longest sentence"})
    max_update: int = II("optimization.max_update")


def kernel_sizes(cfg):
    try:
        return tuple(int(k) for k in str(cfg.decoder_conv_kernel_sizes).split(",") if k.strip())
    except ValueError:
        raise ValueError(
            f"--decoder-conv-kernel-sizes must be comma-separated integers, got {cfg.decoder_conv_kernel_sizes!r}"
        ) from None


class FairseqCausalSelfAttention(nn.Module):
    """fairseq's ``MultiheadAttention`` as a causal self-attention candidate (T, B, C) -> (T, B, C)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attn = MultiheadAttention(dim, heads, dropout=dropout, self_attention=True)

    def forward(self, x):
        steps = x.shape[0]
        # fairseq's TransformerDecoder.buffered_future_mask: -inf above the diagonal
        mask = torch.triu(torch.full((steps, steps), float("-inf"), device=x.device), 1).to(x.dtype)
        out, _ = self.attn(query=x, key=x, value=x, need_weights=False, attn_mask=mask)
        return out


def fairseq_candidates(cfg):
    """The candidate factory of the fairseq model: fairseq's modules where fairseq has them."""
    dim, heads = cfg.decoder_embed_dim, cfg.decoder_attention_heads

    def build(name: str) -> nn.Module:
        module = build_common_candidate(name, dim, cfg.decoder_ffn_embed_dim, cfg.activation_dropout)
        if module is not None:
            return module
        if name == "attention":
            return FairseqCausalSelfAttention(dim, heads, cfg.attention_dropout)
        if name.startswith("lightconv_"):
            k = kernel_of(name, "lightconv_")
            conv = LightweightConv1dTBC(dim, kernel_size=k, padding_l=k - 1, num_heads=heads,
                                        weight_dropout=cfg.weight_dropout, weight_softmax=True, bias=False)
            return LightConvBlock(dim, conv)
        raise ValueError(f"unknown Transformer candidate operation {name!r}")

    return build


class MDNASTransformerDecoder(FairseqDecoder):
    def __init__(self, dictionary, lm: SearchableTransformerLM, max_target_positions: int):
        super().__init__(dictionary)
        self.lm = lm
        self.max_target_positions = max_target_positions

    def forward(self, prev_output_tokens, src_lengths=None, domain=None, batch_domain=None, **kwargs):
        if domain is None:
            raise ValueError(
                "mdnas_transformer_lm needs the domain of every sentence (net_input['domain']); "
                "load the data with --task multidomain_nas"
            )
        logits, features = self.lm(prev_output_tokens, domain.to(prev_output_tokens.device), batch_domain)
        return logits, {"states": features, "src_lengths": src_lengths, "attn": [None]}

    def max_positions(self):
        return self.max_target_positions

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        logits = net_output[0].float()
        return torch.log_softmax(logits, dim=-1) if log_probs else torch.softmax(logits, dim=-1)


_register = (register_model("mdnas_transformer_lm", dataclass=MDNASTransformerConfig)
             if "mdnas_transformer_lm" not in ARCH_MODEL_REGISTRY else (lambda c: c))


@_register
class MDNASTransformerModel(SearchableModel, FairseqLanguageModel):
    def __init__(self, decoder, cfg):
        super().__init__(decoder)
        self.cfg = cfg

    @classmethod
    def build_model(cls, cfg, task):
        domains = list(task.domain_names)
        genotype = genotype_for_model(cfg, domains, transformer_lm_space(cfg.decoder_layers, kernel_sizes(cfg)))
        dictionary = task.source_dictionary
        positions = PositionalEmbedding(cfg.max_target_positions, cfg.decoder_embed_dim, dictionary.pad(),
                                        learned=cfg.decoder_learned_pos)
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
        )
        lm.register_buffer("dictionary_fingerprint", torch.tensor(dictionary_fingerprint(dictionary)))
        model = cls(MDNASTransformerDecoder(dictionary, lm, cfg.max_target_positions), cfg)
        if genotype is not None:
            logger.info(f"derived multimodel: {sum(p.numel() for p in model.parameters())} parameters "
                        f"(genotype count {lm.genotype_param_count(genotype)})")
        return model

    # ------------------------------------------------------------------ search API used by task / criterion
    @property
    def lm(self) -> SearchableTransformerLM:
        return self.decoder.lm

    network = lm

    def domain_representation(self, net_output, sample):
        """The final hidden state (after the last LayerNorm) at <eos>: the position whose target is <eos>."""
        states = net_output[1]["states"]
        lengths = sample["net_input"]["src_lengths"].to(states.device)
        return states[torch.arange(states.shape[0], device=states.device), lengths - 1]

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        max_update = self.cfg.max_update or 0
        self.lm.gumbel = self.cfg.gumbel_softmax
        self.lm.temperature = (
            annealed_temperature(num_updates, max_update, self.cfg.temperature_start, self.cfg.temperature_end)
            if max_update > 0
            else self.cfg.temperature_start
        )

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        key = "decoder.lm.dictionary_fingerprint"
        if key in state_dict and int(state_dict[key]) != int(self.lm.dictionary_fingerprint):
            raise ValueError(
                "checkpoint was trained with a different dictionary than this data directory's dict.txt "
                f"(vocabulary of {len(self.decoder.dictionary)} types here); use the data-bin the model was trained on"
            )
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


def _sizes(args, layers, dim, ffn, heads, dropout):
    args.decoder_layers = safe_getattr(args, "decoder_layers", layers)
    args.decoder_embed_dim = safe_getattr(args, "decoder_embed_dim", dim)
    args.decoder_ffn_embed_dim = safe_getattr(args, "decoder_ffn_embed_dim", ffn)
    args.decoder_attention_heads = safe_getattr(args, "decoder_attention_heads", heads)
    args.dropout = safe_getattr(args, "dropout", dropout)


if "mdnas_transformer_lm_tiny" not in ARCH_MODEL_REGISTRY:

    @register_model_architecture("mdnas_transformer_lm", "mdnas_transformer_lm_tiny")
    def mdnas_transformer_lm_tiny(args):
        _sizes(args, 2, 64, 256, 4, 0.1)

    @register_model_architecture("mdnas_transformer_lm", "mdnas_transformer_lm_small")
    def mdnas_transformer_lm_small(args):
        _sizes(args, 4, 256, 1024, 4, 0.1)

    @register_model_architecture("mdnas_transformer_lm", "mdnas_transformer_lm_base")
    def mdnas_transformer_lm_base(args):
        _sizes(args, 6, 512, 2048, 8, 0.1)
