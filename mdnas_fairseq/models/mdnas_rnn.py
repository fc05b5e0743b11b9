"""fairseq model ``mdnas_rnn``: a language model over the DARTS recurrent cell.

Thin glue over :class:`mdnas_fairseq.cells.rnn.DartsRNNLanguageModel`:

* without ``--genotype`` it is the search model (per-domain alpha over all candidates);
* with ``--genotype FILE`` it is the derived concordant multimodel of that genotype;
* ``--shared-architecture`` gives the "single model on the union of domains" baseline.

Named sizes: ``mdnas_rnn_tiny`` (tests, demo), ``mdnas_rnn_small``, ``mdnas_rnn_base``.
"""

import hashlib
import logging
from dataclasses import dataclass, field

import torch
from fairseq.dataclass import ChoiceEnum
from fairseq.models import (
    ARCH_MODEL_REGISTRY,
    FairseqDecoder,
    FairseqLanguageModel,
    register_model,
    register_model_architecture,
)
from fairseq.utils import safe_getattr
from omegaconf import II

from ..cells.rnn import DartsRNNLanguageModel
from ..search import annealed_temperature, darts_rnn_space
from .searchable import ArchitectureConfig, SearchableModel, genotype_for_model

logger = logging.getLogger(__name__)


@dataclass
class MDNASRNNConfig(ArchitectureConfig):
    embed_dim: int = field(default=256, metadata={"help": "embedding size (= hidden size, embeddings are tied)"})
    hidden_dim: int = field(default=256, metadata={"help": "recurrent state size"})
    num_nodes: int = field(default=8, metadata={"help": "intermediate nodes of the DARTS recurrent cell"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the cell output"})
    dropout_emb: float = field(default=0.0, metadata={"help": "word-type dropout on the embeddings"})
    dropout_x: float = field(default=0.0, metadata={"help": "variational dropout on the cell input"})
    dropout_h: float = field(default=0.0, metadata={"help": "variational dropout on the recurrent states"})
    gumbel_softmax: bool = field(default=False, metadata={"help": "Gumbel-softmax mixing weights while searching"})
    temperature_start: float = field(default=1.0, metadata={"help": "(Gumbel-)softmax temperature at update 0"})
    temperature_end: float = field(default=1.0, metadata={"help": "temperature at --max-update (exponential)"})
    max_target_positions: int = field(default=1024, metadata={"help": "longest sentence"})
    compile_cell: ChoiceEnum(["auto", "on", "off"]) = field(
        default="auto",
        metadata={
            "help": "torch.compile the recurrent cell's per-step function: 'auto' compiles once the eager "
            "steps have cost about as long as compiling (60 s of forward time; the derived cell only on "
            "CUDA, on CPU it is not faster compiled), 'on' at the first step, 'off' never; a failed "
            "compilation falls back to eager with one log line"
        },
    )
    max_update: int = II("optimization.max_update")


def dictionary_fingerprint(dictionary) -> int:
    """A stable 63-bit fingerprint of the dictionary's symbols (to detect a mismatched dict.txt)."""
    digest = hashlib.sha1("\n".join(dictionary.symbols).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class MDNASRNNDecoder(FairseqDecoder):
    def __init__(self, dictionary, lm: DartsRNNLanguageModel):
        super().__init__(dictionary)
        self.lm = lm

    def forward(self, prev_output_tokens, src_lengths=None, domain=None, **kwargs):
        if domain is None:
            raise ValueError(
                "mdnas_rnn needs the domain of every sentence (net_input['domain']); "
                "load the data with --task multidomain_nas"
            )
        logits, states = self.lm(prev_output_tokens, domain.to(prev_output_tokens.device))
        return logits, {"states": states, "src_lengths": src_lengths, "attn": [None]}

    def max_positions(self):
        return self.max_target_positions

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        logits = net_output[0].float()
        return torch.log_softmax(logits, dim=-1) if log_probs else torch.softmax(logits, dim=-1)


@register_model("mdnas_rnn", dataclass=MDNASRNNConfig) if "mdnas_rnn" not in ARCH_MODEL_REGISTRY else (lambda c: c)
class MDNASRNNModel(SearchableModel, FairseqLanguageModel):
    def __init__(self, decoder, cfg):
        super().__init__(decoder)
        self.cfg = cfg

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
        )
        lm.register_buffer("dictionary_fingerprint", torch.tensor(dictionary_fingerprint(dictionary)))
        decoder = MDNASRNNDecoder(dictionary, lm)
        decoder.max_target_positions = cfg.max_target_positions
        return cls(decoder, cfg)

    # ------------------------------------------------------------------ search API used by task / criterion
    @property
    def lm(self) -> DartsRNNLanguageModel:
        return self.decoder.lm

    network = lm

    def domain_representation(self, net_output, sample):
        """The state at <eos> of each sentence: the position whose target is <eos>."""
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
        emb = "decoder.lm.embedding.weight"
        if emb in state_dict and state_dict[emb].shape != self.lm.embedding.weight.shape:
            raise ValueError(
                f"checkpoint vocabulary has {state_dict[emb].shape[0]} types, this data directory's dict.txt has "
                f"{self.lm.embedding.weight.shape[0]}: mismatched dictionary"
            )
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


def _sizes(args, dim, dropout, dropout_h, dropout_x, dropout_emb):
    args.embed_dim = safe_getattr(args, "embed_dim", dim)
    args.hidden_dim = safe_getattr(args, "hidden_dim", dim)
    args.num_nodes = safe_getattr(args, "num_nodes", 8)
    args.dropout = safe_getattr(args, "dropout", dropout)
    args.dropout_h = safe_getattr(args, "dropout_h", dropout_h)
    args.dropout_x = safe_getattr(args, "dropout_x", dropout_x)
    args.dropout_emb = safe_getattr(args, "dropout_emb", dropout_emb)


if "mdnas_rnn_tiny" not in ARCH_MODEL_REGISTRY:

    @register_model_architecture("mdnas_rnn", "mdnas_rnn_tiny")
    def mdnas_rnn_tiny(args):
        _sizes(args, 32, 0.1, 0.0, 0.0, 0.0)

    @register_model_architecture("mdnas_rnn", "mdnas_rnn_small")
    def mdnas_rnn_small(args):
        _sizes(args, 256, 0.3, 0.1, 0.1, 0.05)

    @register_model_architecture("mdnas_rnn", "mdnas_rnn_base")
    def mdnas_rnn_base(args):
        _sizes(args, 512, 0.4, 0.2, 0.2, 0.1)
