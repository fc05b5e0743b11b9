"""Task ``multidomain_nas``: multi-domain architecture search for language models.

Data: one shared ``dict.txt`` and one fairseq dataset per domain and split, named
``{split}.{domain}`` (``train.en``, ``heldout.en``, ``valid.de``, ...), as written by
``scripts/prepare_parallel.py``. ``heldout`` (``--heldout-subset``) is the held-out part of the
training data that the alpha step uses. Every sample is one sentence ending in <eos>.

Subsets: ``train``/``valid``/``test`` load every domain; ``test.de`` (any ``{split}.{domain}``)
or ``--eval-domain de`` loads one, e.g. for ``fairseq-eval-lm --gen-subset test --eval-domain de``.

``--extend-from``: extend a trained search or multimodel to more domains, the old ones untouched
(:mod:`.extension`, ``docs/extend.md``).

Generation (``fairseq-generate``, ``fairseq-interactive``): fairseq's ``SequenceGenerator`` calls
the decoder without the batch's ``net_input``, so :meth:`MultiDomainNASTask.inference_step` gives
the models' decoders the batch's domain for the generation (``fairseq-interactive``'s batches have
none: ``--eval-domain``'s; ``docs/language-models.md``, "Sampling").
"""

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import List, Tuple

from fairseq import utils
from fairseq.data.indexed_dataset import dataset_exists
from fairseq.tasks import TASK_REGISTRY, register_task
from fairseq.tasks.language_modeling import (
    SAMPLE_BREAK_MODE_CHOICES,
    LanguageModelingConfig,
    LanguageModelingTask,
)

from ..data import MultiDomainDataset
from ..registry import register_once
from .bilevel import BilevelSearchConfig, BilevelSearchMixin, parse_domains
from .extension import ExtensionConfig, ModelExtender

logger = logging.getLogger(__name__)

DATA_METADATA = "mdnas_data.json"


@dataclass
class MultiDomainNASConfig(ExtensionConfig, BilevelSearchConfig, LanguageModelingConfig):
    sample_break_mode: SAMPLE_BREAK_MODE_CHOICES = field(
        default="eos",
        metadata={"help": "multidomain_nas works on sentences: every sample is one line (eos)"},
    )
    eval_domain: str = field(
        default="",
        metadata={
            "help": "load only this domain for evaluation subsets (fairseq-eval-lm, "
            "fairseq-generate); the domain fairseq-interactive samples in"
        },
    )


def read_data_metadata(data_dir: str):
    path = os.path.join(data_dir, DATA_METADATA)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON: {e}") from None


class MultiDomainNASTask(BilevelSearchMixin, LanguageModelingTask):
    """Multi-domain language modelling with per-domain architectures (see the module docstring)."""

    def __init__(self, args, dictionary, output_dictionary=None, targets=None):
        super().__init__(args, dictionary, output_dictionary, targets)
        self.cfg = args
        self.extension = None  # the ModelExtender of --extend-from, once the model is built
        self.domains_from_metadata = not args.domains
        if args.domains:
            domains = parse_domains(args.domains)
        else:
            # without --domains: the data's mdnas_data.json, or (fairseq-eval-lm) the checkpoint's task state
            meta = read_data_metadata(utils.split_paths(args.data)[0]) if args.data else None
            domains = list(meta["langs"]) if meta and meta.get("langs") else []
        self.init_search_state(domains)
        if args.eval_domain and domains and args.eval_domain not in self.domain_names:
            raise ValueError(
                f"--eval-domain {args.eval_domain!r} is not one of --domains {self.domain_names}"
            )

    def require_domains(self) -> None:
        if not self.domain_names:
            raise ValueError(
                f"--domains is required (no {DATA_METADATA} with 'langs' in {self.args.data} and no checkpoint "
                "task state to take them from): give the domains as a comma-separated list, e.g. --domains en,de"
            )

    @classmethod
    def setup_task(cls, args, **kwargs):
        if not args.data:
            raise ValueError(
                "multidomain_nas needs a data directory (the first positional argument)"
            )
        data_dir = utils.split_paths(args.data)[0]
        kind = (read_data_metadata(data_dir) or {}).get("kind")
        if kind is not None:  # language-model data-bins have no "kind"
            what = "a translation data-bin" if kind == "translation" else f"a {kind!r} data-bin"
            use = (
                "use --task multidomain_nas_translation with it"
                if kind == "translation"
                else "prepare language-model data with mdnas-prepare (without --translation)"
            )
            raise ValueError(
                f"{data_dir} is {what} ({os.path.join(data_dir, DATA_METADATA)} says kind "
                f"{kind!r}), not a language-model one: --task multidomain_nas models text of "
                f"each domain; {use}"
            )
        if not os.path.isfile(os.path.join(data_dir, "dict.txt")):
            raise FileNotFoundError(
                f"{data_dir}: no dict.txt; prepare the data with scripts/prepare_parallel.py "
                "(one shared dictionary, subsets named {split}.{domain})"
            )
        if args.sample_break_mode != "eos":
            raise ValueError(
                f"multidomain_nas works on sentences: --sample-break-mode must be eos (its default), "
                f"got {args.sample_break_mode}"
            )
        return super().setup_task(args, **kwargs)

    # ------------------------------------------------------------------ domains of a subset
    def train_subset_name(self) -> str:
        return "train"

    def load_state_dict(self, state):
        # fairseq-eval-lm without --domains: adopt the domains the checkpoint was trained on
        saved = (state or {}).get("domain_names")
        if saved is not None and self.domains_from_metadata and list(saved) != self.domain_names:
            self.init_search_state(list(saved))
            if self.cfg.eval_domain and self.cfg.eval_domain not in self.domain_names:
                raise ValueError(
                    f"--eval-domain {self.cfg.eval_domain!r} is not one of the checkpoint's domains {self.domain_names}"
                )
        super().load_state_dict(state)

    def subset_domains(self, split: str) -> Tuple[str, List[int]]:
        """(file prefix, domain indices) of a subset name such as ``valid``, ``test.de``."""
        base, _, suffix = split.rpartition(".")
        if base and suffix in self.domain_names:
            return base, [self.domain_names.index(suffix)]
        if (
            base
            and suffix
            and split.split(".")[0] in ("train", "valid", "test", self.cfg.heldout_subset)
        ):
            raise ValueError(
                f"subset {split!r}: domain {suffix!r} is not one of --domains {self.domain_names}"
            )
        if self.cfg.eval_domain and split not in ("train", self.cfg.heldout_subset):
            return split, [self.domain_names.index(self.cfg.eval_domain)]
        return split, list(range(len(self.domain_names)))

    def load_dataset(self, split: str, epoch=1, combine=False, **kwargs):
        self.require_domains()
        base, indices = self.subset_domains(split)
        data_path = utils.split_paths(self.args.data)[
            (epoch - 1) % len(utils.split_paths(self.args.data))
        ]
        per_domain = []
        for d in indices:
            name = f"{base}.{self.domain_names[d]}"
            path = os.path.join(data_path, name)
            if not dataset_exists(path, impl=self.args.dataset_impl or "mmap"):
                available = sorted(f[:-4] for f in os.listdir(data_path) if f.endswith(".idx"))
                raise FileNotFoundError(
                    f"domain {self.domain_names[d]!r}: subset {name!r} not found in {data_path} "
                    f"(expected {name}.bin/.idx; found {available})"
                )
            super(BilevelSearchMixin, self).load_dataset(
                name, epoch=epoch, combine=combine, **kwargs
            )
            per_domain.append(self.datasets.pop(name))
        self.datasets[split] = MultiDomainDataset(
            per_domain, indices, [self.domain_names[d] for d in indices]
        )
        logger.info(
            f"{split}: "
            + ", ".join(
                f"{self.domain_names[d]} {len(ds)} sentences" for d, ds in zip(indices, per_domain)
            )
        )
        return self.datasets[split]

    @staticmethod
    def require_parallel(ds: MultiDomainDataset, split: str) -> None:
        """The contrastive term pairs line i of one domain with line i of another."""
        lengths = {name: len(d) for name, d in zip(ds.domain_names, ds.datasets)}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"--contrastive-coef needs parallel data (line i of every domain a translation of the others), "
                f"but subset {split!r} has {lengths} sentences"
            )

    def triplet_labels(self, sample):
        """Parallel text: a sentence and its translation share a label, their line index."""
        return sample["id"]

    # ------------------------------------------------------------------ fairseq hooks
    def build_model(self, args, from_checkpoint=False):
        """The model; with ``--extend-from`` (training, not a model read back from a checkpoint)
        the old checkpoint is checked first, then copied into the model (:mod:`.extension`)."""
        self.require_domains()
        extender = None
        if self.cfg.extend_from and not from_checkpoint:
            extender = ModelExtender(self, args)
        model = super().build_model(args, from_checkpoint)
        if extender is not None:
            extender.apply(model)
        return model

    # ------------------------------------------------------------------ generation
    def generation_domain(self, sample) -> int:
        """The domain a batch is generated in: the batch's own (``net_input["batch_domain"]``),
        else ``--eval-domain``'s (``fairseq-interactive`` rebuilds its batches without theirs),
        else the only domain."""
        batch_domain = sample["net_input"].get("batch_domain")
        if batch_domain is not None:
            return int(batch_domain)
        if self.cfg.eval_domain:
            return self.domain_names.index(self.cfg.eval_domain)
        if len(self.domain_names) == 1:
            return 0
        raise ValueError(
            f"give the domain to generate in with --eval-domain (one of {self.domain_names})"
        )

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """fairseq's language-model generation (a prefix, then sampling or beam search), with every
        model's decoder set to the batch's domain (:meth:`generation_domain`) meanwhile."""
        domain = self.generation_domain(sample)
        with contextlib.ExitStack() as stack:
            for model in models:
                decoder = getattr(model, "decoder", None)
                if hasattr(decoder, "decoding_domain"):
                    stack.enter_context(decoder.decoding_domain(domain))
            return super().inference_step(
                generator, models, sample, prefix_tokens=prefix_tokens, constraints=constraints
            )

    def require_parallel_data(self) -> None:
        """A data-bin whose ``mdnas_data.json`` says ``"parallel": false`` (domains from a column,
        or a new language drawn apart from the old rows) has no translations to pair."""
        data_dir = utils.split_paths(self.cfg.data)[0]
        meta = read_data_metadata(data_dir)
        if meta is not None and meta.get("parallel") is False:
            why = (
                f"its domains are the values of column {meta['domain_column']!r}"
                if meta.get("domain_column")
                else "its rows are not line-aligned across domains"
            )
            raise ValueError(
                f"--contrastive-coef needs parallel data (line i of every domain a translation of the others), "
                f"but {os.path.join(data_dir, DATA_METADATA)} says the data is not parallel: {why}"
            )

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if self.uses_contrastive(criterion) and not getattr(self, "_parallel_checked", False):
            self.require_parallel_data()
            self.require_parallel(self.datasets[self.train_subset_name()], self.train_subset_name())
            if self.architect is not None:
                self.require_parallel(self.search.heldout.dataset(), self.cfg.heldout_subset)
            self._parallel_checked = True
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)


register_once(
    TASK_REGISTRY,
    "multidomain_nas",
    lambda: register_task("multidomain_nas", dataclass=MultiDomainNASConfig)(MultiDomainNASTask),
)
