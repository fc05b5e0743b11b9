"""fairseq model ``mdnas_rnn``: a language model over the DARTS recurrent cell.

Thin glue over :class:`mdnas_fairseq.cells.rnn.DartsRNNLanguageModel`:

* without ``--genotype`` it is the search model (per-domain alpha over all candidates);
* with ``--genotype FILE`` it is the derived concordant multimodel of that genotype;
* ``--shared-architecture`` gives the "single model on the union of domains" baseline.

Named sizes: ``mdnas_rnn_tiny`` (tests, demo), ``mdnas_rnn_small``, ``mdnas_rnn_base``.
"""

from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.models import (
    ARCH_MODEL_REGISTRY,
    MODEL_REGISTRY,
    register_model,
    register_model_architecture,
)
from fairseq.utils import safe_getattr

from ..cells.rnn import SEARCH_WEIGHTS, DartsRNNLanguageModel
from ..registry import register_once
from ..search import darts_rnn_space
from .language_model import LanguageModelSearchConfig, SearchableDecoder, SearchableLanguageModel
from .searchable import ModelExtension, genotype_for_model


@dataclass
class MDNASRNNConfig(LanguageModelSearchConfig):
    embed_dim: int = field(
        default=256, metadata={"help": "embedding size (= hidden size, embeddings are tied)"}
    )
    hidden_dim: int = field(default=256, metadata={"help": "recurrent state size"})
    num_nodes: int = field(
        default=8, metadata={"help": "intermediate nodes of the DARTS recurrent cell"}
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout on the cell output"})
    dropout_emb: float = field(
        default=0.0, metadata={"help": "word-type dropout on the embeddings"}
    )
    dropout_x: float = field(
        default=0.0, metadata={"help": "variational dropout on the cell input"}
    )
    dropout_h: float = field(
        default=0.0, metadata={"help": "variational dropout on the recurrent states"}
    )
    compile_cell: ChoiceEnum(["auto", "on", "off"]) = field(
        default="auto",
        metadata={
            "help": "torch.compile the recurrent cell's per-step function: 'auto' compiles on CUDA "
            "once the eager steps have cost about as long as compiling (60 s of forward time), never "
            "on a CPU (slow to compile there, and it would make results depend on the load); 'on' at "
            "the first step, 'off' never; a failed compilation falls back to eager with one log line"
        },
    )
    search_weights: ChoiceEnum(list(SEARCH_WEIGHTS)) = field(
        default="op",
        metadata={
            "help": "weights of the search cell: 'op', one matrix per (node, operation), every "
            "candidate activation its own product; 'node', DARTS' layout, one matrix per node shared "
            "by the candidate activations (and domains): the search costs about a K'-th of 'op' in "
            "matrix products. The derived multimodel (--genotype) has one matrix per chosen (node, "
            "operation) either way; a checkpoint saved without this option is 'op'"
        },
    )


class MDNASRNNModel(SearchableLanguageModel):
    @classmethod
    def build_model(cls, cfg, task):
        domains = list(task.domain_names)
        genotype = genotype_for_model(cfg, domains, darts_rnn_space(cfg.num_nodes))
        dictionary = task.source_dictionary
        lm = DartsRNNLanguageModel(
            vocab_size=len(dictionary),
            padding_idx=dictionary.pad(),
            embed_dim=cfg.embed_dim,
            hidden_dim=cfg.hidden_dim,
            domains=domains,
            num_nodes=cfg.num_nodes,
            genotype=genotype,
            shared_architecture=cfg.shared_architecture,
            dropout=cfg.dropout,
            dropout_emb=cfg.dropout_emb,
            dropout_x=cfg.dropout_x,
            dropout_h=cfg.dropout_h,
            alpha_init_scale=cfg.alpha_init_scale,
            compile_cell=str(safe_getattr(cfg, "compile_cell", "auto")),
            search_weights=str(safe_getattr(cfg, "search_weights", "op")),
            **ModelExtension.of(cfg).network_options(cfg),
        )
        return cls(SearchableDecoder(dictionary, lm, cfg.max_target_positions, "mdnas_rnn"), cfg)


def _sizes(args, dim, dropout, dropout_h, dropout_x, dropout_emb):
    args.embed_dim = safe_getattr(args, "embed_dim", dim)
    args.hidden_dim = safe_getattr(args, "hidden_dim", dim)
    args.num_nodes = safe_getattr(args, "num_nodes", 8)
    args.dropout = safe_getattr(args, "dropout", dropout)
    args.dropout_h = safe_getattr(args, "dropout_h", dropout_h)
    args.dropout_x = safe_getattr(args, "dropout_x", dropout_x)
    args.dropout_emb = safe_getattr(args, "dropout_emb", dropout_emb)


def mdnas_rnn_tiny(args):
    _sizes(args, 32, 0.1, 0.0, 0.0, 0.0)


def mdnas_rnn_small(args):
    _sizes(args, 256, 0.3, 0.1, 0.1, 0.05)


def mdnas_rnn_base(args):
    _sizes(args, 512, 0.4, 0.2, 0.2, 0.1)


register_once(
    MODEL_REGISTRY,
    "mdnas_rnn",
    lambda: register_model("mdnas_rnn", dataclass=MDNASRNNConfig)(MDNASRNNModel),
)
for _preset in (mdnas_rnn_tiny, mdnas_rnn_small, mdnas_rnn_base):
    register_once(
        ARCH_MODEL_REGISTRY,
        _preset.__name__,
        lambda p=_preset: register_model_architecture("mdnas_rnn", p.__name__)(p),
    )
