"""Task ``multidomain_nas_translation``: multi-domain architecture search for translation.

fairseq's ``translation`` task with the bilevel search of ``multidomain_nas``
(:class:`~.bilevel.BilevelSearchMixin`: an alpha step per update on the held-out split, domain-drawn
epochs, p, resume, the search's files) and its criterion (``multidomain_nas_loss``).

Data: a folder made by ``mdnas-prepare --translation SRC-TGT`` (``mdnas_data.json`` with
``"kind": "translation"``): one joined dictionary (``dict.SRC.txt`` = ``dict.TGT.txt``) and one
fairseq language-pair dataset per domain and split, ``{split}.{domain}.SRC-TGT.{SRC,TGT}``. The
domains, the languages and the pair come from the metadata (``--domains``, ``-s``/``-t`` may
restate them). Subsets: ``train``/``valid``/``test`` load every domain, ``test.gcc`` or
``--eval-domain gcc`` one (``fairseq-generate --gen-subset test --eval-domain gcc``).

Generation: every batch carries its domain (``net_input["domain"]``); ``fairseq-interactive``,
whose batches do not, decodes in the domain of ``--eval-domain``. ``--eval-bleu`` works as in
fairseq's translation task (with ``--eval-bleu-remove-bpe sentencepiece``).
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import metrics, utils
from fairseq.data import LanguagePairDataset
from fairseq.data.indexed_dataset import dataset_exists
from fairseq.tasks import TASK_REGISTRY, register_task
from fairseq.tasks.translation import (
    EVAL_BLEU_ORDER,
    TranslationConfig,
    TranslationTask,
    load_langpair_dataset,
)
from omegaconf import II

from ..data.multidomain_translation import MultiDomainTranslationDataset
from ..registry import register_once
from .bilevel import BilevelSearchConfig, BilevelSearchMixin, parse_domains
from .multidomain_nas import DATA_METADATA, MultiDomainNASTask, read_data_metadata

logger = logging.getLogger(__name__)

KIND = "translation"


@dataclass
class MultiDomainNASTranslationConfig(BilevelSearchConfig, TranslationConfig):
    eval_domain: str = field(
        default="",
        metadata={
            "help": "load only this domain for evaluation subsets; the domain "
            "fairseq-interactive translates in"
        },
    )
    seed: int = II("common.seed")  # the search's batch draws
    batch_size: Optional[int] = II("dataset.batch_size")  # held-out batches


def translation_metadata(data_dir: str) -> dict:
    """The data folder's ``mdnas_data.json``, which must describe a translation data-bin."""
    meta = read_data_metadata(data_dir)
    where = os.path.join(data_dir, DATA_METADATA)
    if meta is None:
        if os.path.isfile(os.path.join(data_dir, "dict.txt")):
            raise ValueError(
                f"{data_dir} looks like a language-model data-bin (dict.txt, no {DATA_METADATA}); "
                "multidomain_nas_translation needs one made by mdnas-prepare --translation SRC-TGT"
            )
        raise FileNotFoundError(
            f"{data_dir}: no {DATA_METADATA}; prepare the data with mdnas-prepare --translation "
            "SRC-TGT (a joined dictionary and one language-pair dataset per domain and split)"
        )
    if meta.get("kind") != KIND:
        raise ValueError(
            f"{where} describes a language-model data-bin (domains {meta.get('langs')}), not a "
            "translation one: use --task multidomain_nas with it, or prepare translation data "
            "with mdnas-prepare --translation SRC-TGT"
        )
    return meta


class MultiDomainNASTranslationTask(BilevelSearchMixin, TranslationTask):
    """Multi-domain translation with per-domain architectures (see the module docstring)."""

    def __init__(self, cfg, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.domains_from_metadata = not cfg.domains
        if cfg.domains:
            domains = parse_domains(cfg.domains)
        else:
            meta = read_data_metadata(utils.split_paths(cfg.data)[0]) if cfg.data else None
            domains = list(meta.get("domains") or []) if meta else []
        self.init_search_state(domains)
        if cfg.eval_domain and domains and cfg.eval_domain not in self.domain_names:
            raise ValueError(
                f"--eval-domain {cfg.eval_domain!r} is not one of the domains {self.domain_names}"
            )

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        if not cfg.data:
            raise ValueError(
                "multidomain_nas_translation needs a data directory (the first positional argument)"
            )
        data_dir = utils.split_paths(cfg.data)[0]
        meta = translation_metadata(data_dir)
        for flag, key in (("source_lang", "source_lang"), ("target_lang", "target_lang")):
            given = getattr(cfg, flag)
            if given is not None and given != meta[key]:
                raise ValueError(
                    f"--{flag.replace('_', '-')} {given}: {data_dir} holds "
                    f"{meta['source_lang']}->{meta['target_lang']} data"
                )
            setattr(cfg, flag, meta[key])
        paths = [os.path.join(data_dir, f"dict.{lang}.txt") for lang in (meta[k] for k in (
            "source_lang", "target_lang"))]  # fmt: skip
        src_dict, tgt_dict = (cls.load_dictionary(p) for p in paths)
        if src_dict.symbols != tgt_dict.symbols:
            raise ValueError(
                f"{paths[0]} ({len(src_dict)} symbols) and {paths[1]} ({len(tgt_dict)} symbols) "
                "differ: the model shares one embedding between source, target and output, so it "
                "needs a joined dictionary (mdnas-prepare --translation writes one; "
                "fairseq-preprocess --joined-dictionary too)"
            )
        return cls(cfg, src_dict, tgt_dict)

    # ------------------------------------------------------------------ domains of a subset
    def train_subset_name(self) -> str:
        return "train"

    require_domains = MultiDomainNASTask.require_domains
    subset_domains = MultiDomainNASTask.subset_domains

    def load_state_dict(self, state):
        # evaluation without --domains: adopt the domains the checkpoint was trained on
        saved = (state or {}).get("domain_names")
        if saved is not None and self.domains_from_metadata and list(saved) != self.domain_names:
            self.init_search_state(list(saved))
        super().load_state_dict(state)

    def load_dataset(self, split: str, epoch=1, combine=False, **kwargs):
        self.require_domains()
        base, indices = self.subset_domains(split)
        paths = utils.split_paths(self.cfg.data)
        data_path = paths[(epoch - 1) % len(paths)]
        src, tgt = self.cfg.source_lang, self.cfg.target_lang
        per_domain = []
        for d in indices:
            name = f"{base}.{self.domain_names[d]}"
            for lang in (src, tgt):
                path = os.path.join(data_path, f"{name}.{src}-{tgt}.{lang}")
                if not dataset_exists(path, impl=self.cfg.dataset_impl or "mmap"):
                    found = sorted(
                        f[: -len(".idx")] for f in os.listdir(data_path) if f.endswith(".idx")
                    )
                    raise FileNotFoundError(
                        f"domain {self.domain_names[d]!r}: subset {name!r} not found in {data_path} "
                        f"(expected {os.path.basename(path)}.bin/.idx; found {found})"
                    )
            per_domain.append(
                load_langpair_dataset(
                    data_path,
                    name,
                    src,
                    self.src_dict,
                    tgt,
                    self.tgt_dict,
                    combine=combine,
                    dataset_impl=self.cfg.dataset_impl,
                    upsample_primary=self.cfg.upsample_primary,
                    left_pad_source=self.cfg.left_pad_source,
                    left_pad_target=self.cfg.left_pad_target,
                    max_source_positions=self.cfg.max_source_positions,
                    max_target_positions=self.cfg.max_target_positions,
                    load_alignments=self.cfg.load_alignments,
                    truncate_source=self.cfg.truncate_source,
                    num_buckets=self.cfg.num_batch_buckets,
                    shuffle=(split != "test"),
                    pad_to_multiple=self.cfg.required_seq_len_multiple,
                )  # fmt: skip
            )
        names = [self.domain_names[d] for d in indices]
        self.datasets[split] = MultiDomainTranslationDataset(per_domain, indices, names)
        logger.info(
            f"{split}: " + ", ".join(f"{n} {len(ds)} pairs" for n, ds in zip(names, per_domain))
        )
        return self.datasets[split]

    # ------------------------------------------------------------------ inference
    def eval_domain_index(self) -> int:
        if not self.cfg.eval_domain:
            raise ValueError(
                f"give the domain to translate in with --eval-domain (one of {self.domain_names})"
            )
        return self.domain_names.index(self.cfg.eval_domain)

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        pairs = LanguagePairDataset(
            src_tokens, src_lengths, self.source_dictionary,
            tgt_dict=self.target_dictionary, constraints=constraints,
        )  # fmt: skip
        d = self.eval_domain_index()
        return MultiDomainTranslationDataset([pairs], [d], [self.domain_names[d]])

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """fairseq-interactive rebuilds its batches without their domain: --eval-domain's."""
        net_input = sample["net_input"]
        if "domain" not in net_input:
            d = self.eval_domain_index()
            tokens = net_input["src_tokens"]
            net_input["domain"] = torch.full((tokens.shape[0],), d, dtype=torch.long)
            net_input["batch_domain"] = d
        return super().inference_step(generator, models, sample, prefix_tokens, constraints)

    # ------------------------------------------------------------------ BLEU per domain
    def valid_step(self, sample, model, criterion):
        """fairseq's; with ``--eval-bleu`` its BLEU statistics are kept under the batch's domain."""
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if self.cfg.eval_bleu:
            name = self.domain_names[sample["domain"]]
            for key in [k for k in logging_output if k.startswith("_bleu_")]:
                logging_output[f"_{name}{key}"] = logging_output.pop(key)
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        """``bleu`` (all domains) and ``bleu_<domain>``, sacrebleu's corpus BLEU as fairseq's
        ``--eval-bleu`` computes it, from statistics kept as plain numbers (fairseq keeps numpy
        arrays, which end up in the checkpoint, where torch.load's weights_only refuses them)."""
        super().reduce_metrics(logging_outputs, criterion)
        if self.cfg.eval_bleu:
            log_bleu(logging_outputs, self.domain_names, "bleu")
            for name in self.domain_names:
                log_bleu(logging_outputs, [name], f"bleu_{name}")

    # ------------------------------------------------------------------ fairseq hooks
    def build_model(self, cfg, from_checkpoint=False):
        self.require_domains()
        return super().build_model(cfg, from_checkpoint)

    def build_criterion(self, cfg, *args, **kwargs):
        criterion = super().build_criterion(cfg, *args, **kwargs)
        if self.uses_contrastive(criterion):
            raise ValueError(
                "--contrastive-coef does not apply to multidomain_nas_translation: the domains' "
                "sentence pairs are not translations of each other's (no triplets to form)"
            )
        return criterion

    def triplet_labels(self, sample):
        raise NotImplementedError("translation domains have no contrastive triplets")


BLEU_STATS = [f"{kind}_{i}" for kind in ("counts", "totals") for i in range(EVAL_BLEU_ORDER)]
BLEU_STATS += ["sys_len", "ref_len"]


def log_bleu(logging_outputs, domains, metric: str) -> None:
    """Log ``metric``: corpus BLEU of the validation batches of ``domains`` (sacrebleu, exp
    smoothing, as fairseq's ``--eval-bleu``), from the statistics :meth:`valid_step` kept."""
    stats = {
        key: int(sum(log.get(f"_{d}_bleu_{key}", 0) for log in logging_outputs for d in domains))
        for key in BLEU_STATS
    }
    if max(stats[f"totals_{i}"] for i in range(EVAL_BLEU_ORDER)) <= 0:
        return
    for key, value in stats.items():
        metrics.log_scalar(f"_{metric}_{key}", value)

    def bleu(meters):
        from sacrebleu.metrics import BLEU

        def total(key):
            return int(meters[f"_{metric}_{key}"].sum)

        score = BLEU.compute_bleu(
            correct=[total(f"counts_{i}") for i in range(EVAL_BLEU_ORDER)],
            total=[total(f"totals_{i}") for i in range(EVAL_BLEU_ORDER)],
            sys_len=total("sys_len"),
            ref_len=total("ref_len"),
            smooth_method="exp",
        ).score
        return float(round(score, 2))

    metrics.log_derived(metric, bleu)


register_once(
    TASK_REGISTRY,
    "multidomain_nas_translation",
    lambda: register_task("multidomain_nas_translation", dataclass=MultiDomainNASTranslationConfig)(
        MultiDomainNASTranslationTask
    ),
)
