"""``--extend-from``: extend a trained model of this plugin to more domains, the old ones untouched.

fairseq glue over :mod:`mdnas_fairseq.cells.extension` (the workflow: ``docs/extend.md``):

* search (no ``--genotype``): ``--extend-from`` an old search's checkpoint. The new domains get
  alpha rows of their own (0, i.e. uniform mixing, or a copy of ``--extend-init-from``'s row); the
  old rows and every old weight are copied and frozen; trained: the new rows and the dictionary
  entries the new data appended. Every genotype file the run writes holds all the domains, and the
  old domains' cells are checked to be those of the old checkpoint's alpha before it is written.
* retrain (``--genotype`` of the extended search): ``--extend-from`` the old multimodel's
  checkpoint. The genotype must give every old domain its old cell; every old parameter is copied
  and frozen; trained: the modules no old domain uses and the appended entries.

The run starts from the old weights as a new run, like fairseq's ``--finetune-from-model``: update
count, optimizers and learning-rate schedule start fresh, and an interrupted extension resumes
from its own ``checkpoint_last.pt`` (the old checkpoint is read again to build the model, then
fairseq loads the saved state over it). Training and alpha-step batches are drawn from the new
domains only (with the old weights frozen an old domain's batch would train nothing), the
contrastive partners from every other domain, old ones included (uniformly), and the structural
term compares the new rows with the old ones. With ``--extend-train-shared`` the copied weights
are trained too and batches of every domain are drawn (p as without an extension).

Every check runs before the model is built, so a bad input stops ``fairseq-train`` before anything
is written; each error names the file and the problem. The model keeps what it needs to be rebuilt
(old domains, appended dictionary blocks) in ``cfg.model.extension_data``: ``fairseq-eval-lm``
loads an extended checkpoint with ``--path`` alone.
"""

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from fairseq.dataclass import FairseqDataclass
from fairseq.models import ARCH_MODEL_NAME_REGISTRY

from ..cells.extension import ExtensionError, extend_network
from ..models.language_model import symbols_fingerprint
from ..models.searchable import ModelExtension, unwrap_model
from ..search import (
    ArchitectureParameters,
    GenotypeError,
    check_extension,
    derive_genotype,
    genotype_from_dict,
    load_genotype,
)
from .bilevel import resume

logger = logging.getLogger(__name__)

LANGUAGE_MODELS = ("mdnas_rnn", "mdnas_transformer_lm")
NETWORK_PREFIX = "decoder.lm."
# model options that may differ between the old run and its extension
FREE_OPTIONS = {
    "_name",
    "genotype",
    "genotype_data",
    "extension_data",
    "compile_cell",
    "max_update",
    "temperature_start",
    "temperature_end",
    "gumbel_softmax",
}


@dataclass
class ExtensionConfig(FairseqDataclass):
    extend_from: Optional[str] = field(
        default=None,
        metadata={
            "help": "extend a checkpoint of this plugin to the new domains of --domains (its own "
            "domains first, in order): a search's checkpoint for a search, a retrained multimodel's "
            "(with --genotype of the extended search) for a retrain. Its weights and architecture "
            "parameters are copied and frozen, and a new run starts from them (update count, "
            "optimizers and learning-rate schedule fresh, as --finetune-from-model); only what the "
            "new domains add is trained (docs/extend.md). The data's dict.txt must start with the "
            "checkpoint's dictionary (entries only appended)"
        },
    )
    extend_init_from: Optional[str] = field(
        default=None,
        metadata={
            "help": "search with --extend-from: start the new domains' architecture parameters as "
            "a copy of this old domain's (default: 0, uniform mixing probabilities)"
        },
    )
    extend_train_shared: bool = field(
        default=False,
        metadata={
            "help": "with --extend-from: train the copied weights too and draw batches of every "
            "domain; the old domains' outputs then change (their architecture parameters stay frozen)"
        },
    )


class ExtensionInputError(ValueError):
    """A bad ``--extend-from`` input; the message names the file and the problem."""


def read_checkpoint(path: str) -> dict:
    """The checkpoint at ``path`` (fairseq's loader), or a clear error."""
    if not os.path.isfile(path):
        raise ExtensionInputError(f"--extend-from {path}: no such file")
    if not zipfile.is_zipfile(path):  # what torch.save writes
        raise ExtensionInputError(f"--extend-from {path}: not a checkpoint (not a torch.save file)")
    from fairseq import checkpoint_utils

    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except Exception as e:  # a torch file fairseq cannot read
        cause = (str(e).splitlines() or [""])[0][:300]
        raise ExtensionInputError(
            f"--extend-from {path}: not a fairseq checkpoint ({type(e).__name__}: {cause})"
        ) from None
    if not isinstance(state, dict) or "model" not in state or state.get("cfg") is None:
        raise ExtensionInputError(
            f"--extend-from {path}: not a fairseq checkpoint (no 'model' and 'cfg' entries)"
        )
    return state


def model_family(cfg) -> Optional[str]:
    """The registered model of a model config (``mdnas_rnn_tiny`` -> ``mdnas_rnn``)."""
    name = getattr(cfg, "_name", None) or getattr(cfg, "arch", None)
    return ARCH_MODEL_NAME_REGISTRY.get(name, name)


def is_derived(model_cfg) -> bool:
    return bool(getattr(model_cfg, "genotype", None) or getattr(model_cfg, "genotype_data", None))


class ModelExtender:
    """Reads and checks ``--extend-from`` for the model about to be built (``__init__``, which sets
    ``model_cfg.extension_data``), then fills the built model and sets the task up (:meth:`apply`)."""

    def __init__(self, task, model_cfg):
        cfg = task.cfg
        self.task, self.path, self.model_cfg = task, cfg.extend_from, model_cfg
        self.state = read_checkpoint(self.path)
        old_cfg = self.state["cfg"]
        self.old_model_cfg = old_cfg.get("model")
        self.search = not is_derived(model_cfg)
        self._check_kind(old_cfg, model_cfg)
        self.old_domains = self._check_domains(task.domain_names)
        old_extension = ModelExtension.of(self.old_model_cfg)
        blocks = list(old_extension.appended_vocabulary)
        appended = self._check_dictionary(task.source_dictionary, old_extension)
        if appended:
            blocks.append((appended, len(self.old_domains)))
        self.init_from = self._check_init_from(cfg.extend_init_from)
        self.old_cells = self._old_cells(model_cfg)
        self._check_not_resuming_it(cfg)
        self.extension = ModelExtension(tuple(self.old_domains), tuple(blocks), self.path)
        model_cfg.extension_data = self.extension.to_json()

    # ------------------------------------------------------------------ checks
    def _fail(self, problem: str):
        raise ExtensionInputError(f"--extend-from {self.path}: {problem}")

    def _check_kind(self, old_cfg, model_cfg) -> None:
        old_task = getattr(old_cfg.get("task"), "_name", None)
        family = model_family(self.old_model_cfg) if self.old_model_cfg is not None else None
        if old_task != "multidomain_nas" or family not in LANGUAGE_MODELS:
            self._fail(
                f"a checkpoint of model {family!r} (task {old_task!r}), not of a language model of "
                f"this plugin ({', '.join(LANGUAGE_MODELS)} with --task multidomain_nas)"
            )
        if family != model_family(model_cfg):
            self._fail(f"a {family} checkpoint; this run builds {model_family(model_cfg)}")
        if self.old_model_cfg.get("shared_architecture") or model_cfg.shared_architecture:
            self._fail(
                "--shared-architecture (one architecture for all domains) cannot be extended: the "
                "new domains would change the old domains' architecture"
            )
        old_derived = is_derived(self.old_model_cfg)
        if old_derived and self.search:
            self._fail(
                "a retrained multimodel's checkpoint (it has a genotype); a search is extended from "
                "the old search's checkpoint, a multimodel with --genotype of the extended search"
            )
        if not old_derived and not self.search:
            self._fail(
                "a search checkpoint; a retrain (--genotype) is extended from the old retrained "
                "multimodel's checkpoint (e.g. RETRAIN/checkpoint_best.pt)"
            )

    def _check_domains(self, domains: List[str]) -> List[str]:
        old = list((self.state.get("task_state") or {}).get("domain_names") or [])
        if not old:
            self._fail(
                "the checkpoint holds no domain names (task state): not a multidomain_nas run"
            )
        n = len(old)
        again = [d for d in domains[n:] if d in old]
        if domains[:n] != old or again:
            self._fail(
                f"--domains {','.join(domains)} must list the checkpoint's domains {','.join(old)} "
                "first, in that order, then the new ones"
                + (f" ({', '.join(again)} already in the checkpoint)" if again else "")
            )
        if len(domains) == n:
            self._fail(f"--domains {','.join(domains)} adds no domain to the checkpoint's")
        return old

    def _check_dictionary(self, dictionary, old_extension: ModelExtension) -> int:
        """The data's dictionary must be the checkpoint's with entries appended; returns how many."""
        model = self.state["model"]
        base = model.get(NETWORK_PREFIX + "embedding.weight")
        fingerprint = model.get(NETWORK_PREFIX + "dictionary_fingerprint")
        if base is None or fingerprint is None:
            self._fail("the model state has no embedding or dictionary fingerprint")
        old_size = base.shape[0] + sum(n for n, _ in old_extension.appended_vocabulary)
        data = self.task.cfg.data
        if len(dictionary) < old_size or symbols_fingerprint(dictionary.symbols[:old_size]) != int(
            fingerprint
        ):
            self._fail(
                f"the dict.txt of {data} does not start with the checkpoint's dictionary (its first "
                f"{old_size} entries differ; this one has {len(dictionary)}): prepare the new data "
                "against the old data-bin, so the dictionary is only appended to"
            )
        return len(dictionary) - old_size

    def _check_init_from(self, name: Optional[str]) -> Optional[int]:
        if not name:
            return None
        if not self.search:
            raise ExtensionInputError(
                "--extend-init-from copies an old domain's architecture parameters: it applies to "
                "a search (without --genotype)"
            )
        if name not in self.old_domains:
            raise ExtensionInputError(
                f"--extend-init-from {name}: not one of the checkpoint's domains {self.old_domains}"
            )
        return self.old_domains.index(name)

    def _old_cells(self, model_cfg) -> Optional[Dict[str, tuple]]:
        """The old domains' genotype cells, which the extension must keep (a retrain: checked
        against --genotype now; a search: checked at every genotype write)."""
        if self.search:
            return None  # derived from the old alpha once the network exists (apply)
        old = genotype_from_dict(
            json.loads(self.old_model_cfg.genotype_data), source=f"genotype of {self.path}"
        )
        if model_cfg.genotype_data:
            new = genotype_from_dict(json.loads(model_cfg.genotype_data))
            source = "the stored genotype"
        else:
            new, source = load_genotype(model_cfg.genotype), model_cfg.genotype
        try:
            check_extension(old, new, source)
        except GenotypeError as e:
            raise ExtensionInputError(f"{e} (--extend-from {self.path})") from None
        return {d: old.cells[d] for d in old.domains}

    def _check_not_resuming_it(self, cfg) -> None:
        """fairseq resumes from the save dir's checkpoint_last.pt: it must be this extension's."""
        restore = resume.checkpoint_to_resume(cfg)
        if restore is None:
            return
        if not os.path.samefile(restore, self.path):
            from fairseq import checkpoint_utils

            saved = checkpoint_utils.load_checkpoint_to_cpu(restore)["cfg"]["model"]
            if ModelExtension.of(saved).old_domains == tuple(self.old_domains):
                return  # an interrupted extension: resumed
        self._fail(
            f"this run would resume from {restore}, which is not an extension of it: give the "
            "extension a --save-dir of its own"
        )

    # ------------------------------------------------------------------ the model
    def apply(self, model) -> None:
        core = unwrap_model(model)
        old_state = {
            k[len(NETWORK_PREFIX) :]: v
            for k, v in self.state["model"].items()
            if k.startswith(NETWORK_PREFIX) and k != NETWORK_PREFIX + "dictionary_fingerprint"
        }
        cfg = self.task.cfg
        try:
            report = extend_network(
                core.network, old_state, self.init_from, cfg.extend_train_shared
            )
        except ExtensionError as e:
            raise ExtensionInputError(
                f"--extend-from {self.path}: {e}{self._options_hint()}"
            ) from None
        logger.info(
            f"extending {','.join(self.old_domains)} from {self.path} to "
            f"{','.join(self.task.domain_names)}: {report.summary()}"
        )
        if self.search:  # the old genotype: every genotype written must keep its cells
            rows = ArchitectureParameters.rows_in_state(old_state, "alphas.")
            old = derive_genotype(rows, core.search_space, self.old_domains)
            self.old_cells = {d: old.cells[d] for d in self.old_domains}
            self.task.search.fixed_cells = self.old_cells
        n_old, n = len(self.old_domains), len(self.task.domain_names)
        self.task.extension = self
        if not cfg.extend_train_shared:
            self.task.train_only(list(range(n_old, n)))
        self.state = None  # the old weights are in the model now

    def _options_hint(self) -> str:
        old, new = self.old_model_cfg, self.model_cfg
        differ = sorted(
            k for k in old if k not in FREE_OPTIONS and k in new and old.get(k) != new.get(k)
        )
        if not differ:
            return ""
        return "; model options that differ from the checkpoint's: " + ", ".join(
            f"{k} {old.get(k)!r} there, {new.get(k)!r} here" for k in differ
        )

    def settings(self) -> Dict[str, object]:
        """What genotype files record about the extension."""
        return {"extended_from": self.path, "frozen_domains": list(self.old_domains)}
