"""The fairseq hooks of a multi-domain search task (shared by the language and the vision task).

:class:`BilevelSearchMixin` goes before the fairseq task class in the host task's bases; the
host provides what :class:`~.host.SearchHost` lists. Each concern lives in a module of its own:
the bilevel step (:mod:`.step`), domain-drawn epochs (:mod:`.epochs`), held-out batches
(:mod:`.heldout`), contrastive partners (:mod:`.partners`), the virtual step's optimizer rule
(:mod:`.optimizers`), mixed precision (:mod:`.precision`), workers (:mod:`.distributed`), resume
(:mod:`.resume`) and the files a search writes (:mod:`.outputs`).
"""

import contextlib
from typing import Dict, List, Optional

import torch

from ... import log_schema
from ...models.searchable import unwrap_model
from ...search import BilevelArchitect, DomainSampler, architecture_parameters, weight_parameters
from . import distributed, epochs, outputs, partners, resume, step
from .config import validate
from .heldout import HeldoutBatches
from .precision import AlphaLossScale


class SearchState:
    """What a search keeps besides the model: the alpha optimizer, p, held-out iterators."""

    def __init__(self, host, num_domains: int):
        cfg = host.cfg
        probs = list(cfg.domain_probs) if cfg.domain_probs else None
        self.domain_sampler = DomainSampler(num_domains, probs, cfg.eta_p)
        self.architect: Optional[BilevelArchitect] = None
        self.epoch_probs: Dict[int, List[float]] = {}  # p of each epoch's batch draws
        self.epoch_probs_host: List[float] = (
            self.domain_sampler.probs.tolist()
        )  # p of the current epoch
        self.heldout = HeldoutBatches(host)
        self.last_alpha_update: Optional[int] = None
        self.alpha_scale = AlphaLossScale()  # fp16: the alpha step's factor on the loss scale
        self.penalty = None  # ParamPenalty of the model, for the logged expected cell sizes
        self.pending_architect: Optional[dict] = None  # state read before the model was built
        self.trained_epoch: Optional[int] = None  # the epoch this process is training
        self.model = None  # the trainer's model, for the files written at the end of an epoch
        self.written = None  # (epoch, update) of the last files written
        self.architecture_names: Optional[List[str]] = None  # the model's, once it is built
        # an extension (BilevelSearchMixin.train_only): the domains training batches are drawn
        # from (None: all), and p of the contrastive partner draws (None: the epoch's p)
        self.trained_domains: Optional[List[int]] = None
        self.partner_probs: Optional[List[float]] = None
        # an extension: architecture name -> genotype cell every genotype written must keep
        self.fixed_cells: Optional[Dict[str, tuple]] = None

    @property
    def alpha_scale_factor(self) -> float:
        return self.alpha_scale.factor

    @alpha_scale_factor.setter
    def alpha_scale_factor(self, value: float) -> None:
        self.alpha_scale.factor = float(value)


class BilevelSearchMixin:
    """See the module docstring."""

    # ------------------------------------------------------------------ setup
    def init_search_state(self, domain_names: List[str]) -> None:
        self.domain_names = list(domain_names)
        self.search: Optional[SearchState] = None
        self._resume_checked = False
        if self.domain_names:
            validate(self.cfg, len(self.domain_names))
            self.search = SearchState(self, len(self.domain_names))

    @property
    def architect(self) -> Optional[BilevelArchitect]:
        return self.search.architect if self.search is not None else None

    def build_model(self, cfg, *args, **kwargs):
        model = super().build_model(cfg, *args, **kwargs)
        core = unwrap_model(model)
        self.check_data_parallel(core)
        names = getattr(core, "architecture_names", None)  # a plain fairseq baseline has none
        self.search.architecture_names = list(names) if names is not None else None
        alphas = architecture_parameters(core)
        if alphas:
            self.search.architect = BilevelArchitect(
                weight_parameters(core),
                alphas,
                order=self.cfg.alpha_order,
                difference=str(self.cfg.alpha_hessian_difference),
                lr=self.cfg.alpha_lr,
                betas=tuple(self.cfg.alpha_betas),
                weight_decay=self.cfg.alpha_weight_decay,
                buffers=core.buffers,  # batch-norm statistics: a second-order step restores them
            )
            if self.search.pending_architect is not None:
                self.search.architect.load_state_dict(self.search.pending_architect)
                self.search.pending_architect = None
        return model

    def check_data_parallel(self, core) -> None:
        """A derived multimodel runs only its batch's domain modules: under PyTorch's DDP the other
        domains' parameters get no gradient, which DDP must be told about."""
        several = not getattr(core, "is_search", True) and len(core.architecture_names) > 1
        if (
            several
            and self.cfg.distributed_world_size > 1
            and self.cfg.ddp_backend in ("pytorch_ddp", "c10d")
            and not self.cfg.find_unused_parameters
        ):
            raise ValueError(
                f"the derived multimodel has one cell per domain ({', '.join(core.architecture_names)}): a worker's "
                "batch uses one domain's parameters only, which --ddp-backend pytorch_ddp rejects; add "
                "--find-unused-parameters, or use --ddp-backend legacy_ddp"
            )

    def build_criterion(self, cfg, *args, **kwargs):
        criterion = super().build_criterion(cfg, *args, **kwargs)
        self.criterion_settings = {
            k: getattr(criterion, k)
            for k in ("struct_coef", "contrastive_coef", "triplet_margin", "param_coef")
            if hasattr(criterion, k)
        }
        return criterion

    def uses_contrastive(self, criterion) -> bool:
        return getattr(criterion, "contrastive_coef", 0) > 0 and len(self.domain_names) > 1

    def train_only(self, domains: List[int]) -> None:
        """Draw training and alpha-step batches of ``domains`` only, the others getting p = 0 (the
        old, frozen domains of an extension): an epoch is their batches; ``--domain-probs``, if
        given, weighs them. The contrastive partners still come from every other domain, uniformly."""
        n = len(self.domain_names)
        given = list(self.cfg.domain_probs) if self.cfg.domain_probs else [1.0] * n
        probs = [float(given[d]) if d in domains else 0.0 for d in range(n)]
        if sum(probs) <= 0:
            raise ValueError(
                f"--domain-probs {given} gives the trained domains "
                f"{[self.domain_names[d] for d in domains]} no probability"
            )
        self.search.domain_sampler = DomainSampler(n, probs, self.cfg.eta_p)
        self.search.epoch_probs_host = self.search.domain_sampler.probs.tolist()
        self.search.trained_domains = sorted(domains)
        self.search.partner_probs = [1.0] * n

    def partner_probs(self) -> List[float]:
        """p of the contrastive partner draws."""
        return self.search.partner_probs or self.search.epoch_probs_host

    # ------------------------------------------------------------------ the bilevel step
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """One alpha step per update (on its first sub-batch, :mod:`.step`), then the weight step."""
        model.train()
        model.set_num_updates(update_num)
        core = unwrap_model(model)
        if (
            self.uses_contrastive(criterion) and not ignore_grad
        ):  # one partner batch serves both steps
            other = partners.partner_domain(
                sample["domain"], self.partner_probs(), self.cfg.seed, update_num
            )
            partners.attach_partner(sample, self.datasets[self.train_subset_name()], other, core)
        search_log = {}
        if self.architect is not None:
            search_log = step.alpha_step(
                self, sample, core, criterion, optimizer, update_num, ignore_grad
            )
        amp = (
            type(optimizer).__name__ == "AMPOptimizer"
        )  # fairseq's --amp: autocast the weight step's forward
        with torch.autocast("cuda") if amp else contextlib.nullcontext():
            loss, sample_size, logging_output = criterion(model, sample)
        if ignore_grad:
            loss *= 0
        optimizer.backward(loss)
        logging_output.update(search_log)
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(
            log_schema.strip(logging_outputs, [log_schema.DOMAIN_LOSS, log_schema.DOMAIN_SIZE]),
            criterion,
        )
        log_schema.log_domain_metrics(logging_outputs, self.domain_names)
        if any(log_schema.SEARCH_COUNT in log for log in logging_outputs):
            names = self.architecture_names_for_logging()
            step.log_search_metrics(logging_outputs, self.domain_names, names)

    def architecture_names_for_logging(self) -> List[str]:
        if self.search is not None and self.search.architecture_names is not None:
            return list(self.search.architecture_names)
        return list(self.domain_names)

    # ------------------------------------------------------------------ training batches
    def epoch_probs(self, epoch: int) -> List[float]:
        """p of an epoch's batch draws: fixed when the epoch is first laid out (kept for resume)."""
        if epoch not in self.search.epoch_probs:
            self.search.epoch_probs[epoch] = self.search.domain_sampler.probs.cpu().tolist()
        self.search.epoch_probs_host = self.search.epoch_probs[epoch]
        return self.search.epoch_probs[epoch]

    def get_batch_iterator(self, dataset, **kwargs):
        if dataset is not self.datasets.get(self.train_subset_name()):
            return super().get_batch_iterator(dataset, **kwargs)
        trained = self.search.trained_epoch
        if trained is not None and kwargs.get("epoch", 1) > trained:
            self.write_search_outputs(trained)  # fairseq asks for the next epoch when one has ended
        if dataset in self.dataset_to_epoch_iter and not kwargs.get(
            "update_epoch_batch_itr", False
        ):
            return self.dataset_to_epoch_iter[dataset]
        self.restore_search_state()
        for unused in ("disable_iterator_cache", "update_epoch_batch_itr"):
            kwargs.pop(unused, None)
        itr = epochs.domain_drawn_iterator(self, dataset, self.epoch_probs, **kwargs)
        self.dataset_to_epoch_iter[dataset] = itr
        return itr

    # ------------------------------------------------------------------ task state
    def state_dict(self):
        if self.search is None:
            return {"domain_names": list(self.domain_names)}
        if self.search.trained_epoch is not None:
            self.write_search_outputs(self.search.trained_epoch)  # a checkpoint is being saved
        state = {
            "domain_names": list(self.domain_names),
            "domain_sampler": self.search.domain_sampler.state_dict(),
            "epoch_domain_probs": {int(k): list(v) for k, v in self.search.epoch_probs.items()},
            "heldout_iterators": self.search.heldout.state_dict(),
            "alpha_loss_scale": self.search.alpha_scale.state_dict(),
        }
        if self.architect is not None:
            state["architect"] = self.architect.state_dict()
        elif self.search.pending_architect is not None:
            state["architect"] = self.search.pending_architect
        return state

    def load_state_dict(self, state):
        if not state:
            return
        saved = state.get("domain_names")
        if saved is not None and list(saved) != self.domain_names:
            raise ValueError(
                f"checkpoint was made for domains {list(saved)}, this run has --domains {','.join(self.domain_names)}"
            )
        if self.search is None:
            return
        if "domain_sampler" in state:
            self.search.domain_sampler.load_state_dict(state["domain_sampler"])
        self.search.epoch_probs = {
            int(k): list(v) for k, v in state.get("epoch_domain_probs", {}).items()
        }
        self.search.heldout.load_state_dict(state.get("heldout_iterators", {}))
        if "alpha_loss_scale" in state:
            self.search.alpha_scale.load_state_dict(state["alpha_loss_scale"])
        if "architect" in state:
            if self.architect is not None:
                self.architect.load_state_dict(state["architect"])
            else:
                self.search.pending_architect = state["architect"]

    def restore_search_state(self) -> None:
        """Load the task state of the checkpoint that fairseq-train resumes from (:mod:`.resume`)."""
        if self._resume_checked:
            return
        self._resume_checked = True
        state = resume.saved_task_state(self.cfg)
        if state:
            self.load_state_dict(state)

    # ------------------------------------------------------------------ outputs
    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        if self.search is not None:
            self.search.trained_epoch = epoch
            self.search.model = model

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        if self.search is not None:
            self.search.model = model
            self.write_search_outputs(epoch)

    def write_search_outputs(self, epoch: int) -> Optional[str]:
        """Write the search's files (:mod:`.outputs`) for ``epoch`` if alpha changed since the last
        write: at the end of every epoch (validated or not), at validation and at checkpoint saves."""
        search = self.search
        core = unwrap_model(search.model) if search.model is not None else None
        if (
            core is None
            or not getattr(core, "is_search", False)
            or not distributed.is_master()
            or not self.cfg.save_dir
        ):
            return None
        mark = (epoch, search.last_alpha_update)
        if search.written == mark:
            return None
        search.written = mark
        return outputs.write_search_outputs(
            core,
            self.cfg.save_dir,
            epoch,
            self.search_settings(core),
            heatmaps=not self.cfg.no_alpha_heatmaps,
            fixed_cells=search.fixed_cells,
        )

    def search_settings(self, core) -> Dict[str, object]:
        cfg = self.cfg
        settings = {
            "domains": list(self.domain_names),
            "alpha_order": cfg.alpha_order,
            "alpha_hessian_difference": str(cfg.alpha_hessian_difference),
            "alpha_lr": cfg.alpha_lr,
            "alpha_weight_decay": cfg.alpha_weight_decay,
            "eta_p": cfg.eta_p,
            "seed": cfg.seed,
        }
        settings.update(getattr(self, "criterion_settings", {}))
        extension = getattr(self, "extension", None)  # the language task's --extend-from
        if extension is not None:
            settings.update(extension.settings())
        return settings
