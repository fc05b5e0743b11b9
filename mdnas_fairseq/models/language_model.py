"""What the searchable language models (``mdnas_rnn``, ``mdnas_transformer_lm``) share in fairseq: the
options of the mixing, a decoder that passes each sentence's domain to the network, the sentence
representation for the contrastive term, the temperature schedule and the dictionary check.

Generation (``fairseq-generate``, ``fairseq-interactive``, the hub's ``sample``): fairseq's
``SequenceGenerator`` calls the decoder as ``decoder(tokens, encoder_out=None,
incremental_state=state)``, without the batch's ``net_input`` and so without its domain. The task's
``inference_step`` therefore sets the domain of the batch on the decoder for the duration of the
generation (:meth:`SearchableDecoder.decoding_domain`), and the decoder passes the incremental
state on to the network, which keeps what it needs there (the recurrent state; attention keys and
values, convolution buffers) and reorders it with the beams (``reorder_incremental_state``).
"""

import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch
from fairseq.models import FairseqIncrementalDecoder, FairseqLanguageModel
from omegaconf import II

from ..search import annealed_temperature
from .searchable import ArchitectureConfig, SearchableModel


@dataclass
class LanguageModelSearchConfig(ArchitectureConfig):
    gumbel_softmax: bool = field(
        default=False, metadata={"help": "Gumbel-softmax mixing probabilities while searching"}
    )
    temperature_start: float = field(
        default=1.0, metadata={"help": "(Gumbel-)softmax temperature at update 0"}
    )
    temperature_end: float = field(
        default=1.0, metadata={"help": "temperature at --max-update (exponential)"}
    )
    max_target_positions: int = field(default=1024, metadata={"help": "longest sentence"})
    max_update: int = II("optimization.max_update")


def dictionary_fingerprint(dictionary) -> int:
    """A stable 63-bit fingerprint of the dictionary's symbols (to detect a mismatched dict.txt)."""
    return symbols_fingerprint(dictionary.symbols)


def symbols_fingerprint(symbols) -> int:
    """:func:`dictionary_fingerprint` of a list of symbols (e.g. the first entries of a dictionary)."""
    digest = hashlib.sha1("\n".join(symbols).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class SearchableDecoder(FairseqIncrementalDecoder):
    """fairseq decoder over a searchable network ``lm(tokens, domain, batch_domain) -> (logits, states)``.

    Incremental decoding: ``lm(..., incremental_state=state)`` computes the positions after those
    it has already seen in ``state`` (the last one, as fairseq's decoders), keeping what it needs
    in ``state``; the network's modules reorder it (``reorder_incremental_state``, found by
    fairseq's ``reorder_incremental_state_scripting``)."""

    def __init__(self, dictionary, lm, max_target_positions: int, model_name: str):
        super().__init__(dictionary)
        self.lm = lm
        self.max_target_positions = max_target_positions
        self.model_name = model_name
        self.generation_domain: Optional[int] = None  # see decoding_domain
        lm.register_buffer(
            "dictionary_fingerprint", torch.tensor(dictionary_fingerprint(dictionary))
        )

    @contextlib.contextmanager
    def decoding_domain(self, domain: int) -> Iterator[None]:
        """Calls without a domain (fairseq's ``SequenceGenerator``) decode in domain ``domain``
        (an index into the task's domains) inside the ``with`` block."""
        previous, self.generation_domain = self.generation_domain, int(domain)
        try:
            yield
        finally:
            self.generation_domain = previous

    def forward(
        self,
        prev_output_tokens,
        src_lengths=None,
        domain=None,
        batch_domain=None,
        encoder_out=None,
        incremental_state=None,
        **kwargs,
    ):
        if domain is None:
            if self.generation_domain is None:
                raise ValueError(
                    f"{self.model_name} needs the domain of every sentence (net_input['domain']); "
                    "load the data with --task multidomain_nas (fairseq-generate and "
                    "fairseq-interactive: the task gives the batch's domain, or --eval-domain's)"
                )
            batch_domain = self.generation_domain
            domain = torch.full(
                prev_output_tokens.shape[:1],
                batch_domain,
                dtype=torch.long,
                device=prev_output_tokens.device,
            )
        step = {} if incremental_state is None else {"incremental_state": incremental_state}
        logits, states = self.lm(
            prev_output_tokens, domain.to(prev_output_tokens.device), batch_domain, **step
        )
        extra = {"states": states, "src_lengths": src_lengths, "attn": [None]}
        if batch_domain is not None:  # the entries the batch's domain may emit (a prefix)
            extra["vocabulary_limit"] = self.lm.vocabulary_limit(batch_domain)
        return logits, extra

    def max_positions(self):
        return self.max_target_positions

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        """(Log-)softmax over the entries the batch's domain may emit: over all of them unless the
        dictionary was extended after the domain was added; then over the domain's own prefix
        alone, the appended entries getting probability 0. The prefix is normalised with the
        old model's own computation (same values, same shape), so an old domain's scores are
        bitwise the old checkpoint's (``mdnas_fairseq.cells.vocabulary``); a batch of several
        domains has -inf logits there and is normalised over the whole vocabulary."""
        logits = net_output[0].float()
        limit = net_output[1].get("vocabulary_limit", logits.shape[-1])
        if limit < logits.shape[-1]:
            own = logits[..., :limit].contiguous()
            norm = torch.log_softmax(own, dim=-1) if log_probs else torch.softmax(own, dim=-1)
            rest = norm.new_full(norm.shape[:-1] + (logits.shape[-1] - limit,), 0.0)
            return torch.cat([norm, rest.fill_(float("-inf")) if log_probs else rest], dim=-1)
        return torch.log_softmax(logits, dim=-1) if log_probs else torch.softmax(logits, dim=-1)


class SearchableLanguageModel(SearchableModel, FairseqLanguageModel):
    """A fairseq LM whose decoder is a :class:`SearchableDecoder`; subclasses define ``build_model``."""

    def __init__(self, decoder, cfg):
        super().__init__(decoder)
        self.cfg = cfg

    @property
    def lm(self):
        return self.decoder.lm

    network = lm

    def domain_representation(self, net_output, sample):
        """The state at <eos> of each sentence: the position whose target is <eos>, i.e. its last
        real (non-pad) token, whichever side the sentence is padded on."""
        states = net_output[1]["states"]
        tokens = sample["net_input"]["src_tokens"].to(states.device)
        real = tokens.ne(self.decoder.dictionary.pad())
        steps = torch.arange(tokens.shape[1], device=states.device)
        last = torch.where(real, steps, -1).amax(dim=1).clamp_min(0)
        return states[torch.arange(states.shape[0], device=states.device), last]

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        max_update = self.cfg.max_update or 0
        self.lm.gumbel = self.cfg.gumbel_softmax
        self.lm.temperature = (
            annealed_temperature(
                num_updates, max_update, self.cfg.temperature_start, self.cfg.temperature_end
            )
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
