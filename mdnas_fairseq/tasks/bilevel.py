"""The bilevel search step shared by the multi-domain tasks (language and vision).

:class:`BilevelSearchMixin` gives a fairseq task:

* domain-sampled training epochs: every batch holds one domain d ~ Categorical(p); fairseq
  freezes an epoch's batch list (so it can be sharded over workers and resumed mid-epoch), so
  the draws of an epoch use p as it stands when the epoch's batches are laid out; the p used
  for every epoch is kept in the task state so a resumed run lays out the same batches;
* ``train_step``: the architecture step on a batch of the held-out architecture split of the
  same domain (first or second order, :class:`~mdnas_fairseq.search.BilevelArchitect`), then
  the weight step through ``optimizer.backward``; dummy batches skip the local architecture
  computation (but still join the all-reduce of alpha gradients, so workers stay in step);
* the robust domain distribution (``--eta-p``): architecture-step losses per domain feed
  p = softmax(eta_p * L_hat) after every step (all-reduced over workers);
* the contrastive partner batch (another domain d' ~ p, d' != d) attached to samples;
* task state (architecture optimizer, p, per-epoch p, the architecture iterators) in
  ``state_dict()``, restored from the checkpoint a training run resumes from;
* the genotype files and alpha pictures written at every epoch end (master worker only).

The host task provides ``domain_names``, ``self.cfg`` with the fields of
:class:`BilevelSearchConfig`, ``self.datasets`` of :class:`MultiDomainDataset`, and
``triplet_labels(sample)``.
"""

import ast
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from fairseq import metrics, utils
from fairseq.data import data_utils, iterators
from fairseq.dataclass import FairseqDataclass
from fairseq.distributed import utils as distributed_utils
from omegaconf import II

from ..criterions.multidomain_nas_loss import STAT, STAT_COUNT, unwrap_model
from ..data import MultiDomainDataset, draw_domain_batches
from ..search import (
    BilevelArchitect,
    DomainSampler,
    architecture_parameters,
    atomic_write_text,
    derive_genotype,
    js_structural_loss,
    save_genotype,
    weight_parameters,
)

logger = logging.getLogger(__name__)


@dataclass
class BilevelSearchConfig(FairseqDataclass):
    domains: str = field(default="", metadata={"help": "comma-separated domain names, e.g. en,de"})
    arch_subset: str = field(
        default="arch",
        metadata={"help": "held-out part of the training data used by the architecture step (never valid/test)"},
    )
    arch_order: int = field(default=1, metadata={"help": "architecture step: 1 first order, 2 DARTS second order"})
    arch_lr: float = field(default=3e-3, metadata={"help": "learning rate of the architecture optimizer (Adam)"})
    arch_betas: str = field(default="(0.5, 0.999)", metadata={"help": "Adam betas of the architecture optimizer"})
    arch_weight_decay: float = field(default=1e-3, metadata={"help": "weight decay of the architecture optimizer"})
    arch_start_update: int = field(default=0, metadata={"help": "first update that takes an architecture step"})
    domain_probs: str = field(default="", metadata={"help": "fixed domain probabilities p (default: uniform)"})
    eta_p: float = field(default=0.0, metadata={"help": "robust p = softmax(eta_p * per-domain loss); 0 keeps p"})
    no_alpha_heatmaps: bool = field(default=False, metadata={"help": "do not save softmax(alpha) heatmaps every epoch"})
    save_dir: str = II("checkpoint.save_dir")
    restore_file: str = II("checkpoint.restore_file")
    reset_optimizer: bool = II("checkpoint.reset_optimizer")
    max_tokens: Optional[int] = II("dataset.max_tokens")


def parse_domains(spec: str) -> List[str]:
    domains = [d.strip() for d in (spec or "").split(",") if d.strip()]
    if not domains:
        raise ValueError("--domains is required: a comma-separated list of domain names, e.g. --domains en,de")
    if len(set(domains)) != len(domains):
        raise ValueError(f"--domains lists a domain twice: {spec}")
    return domains


def data_parallel_world_size() -> int:
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 1
    return distributed_utils.get_data_parallel_world_size()


def data_parallel_rank() -> int:
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 0
    return distributed_utils.get_data_parallel_rank()


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if data_parallel_world_size() > 1:
        distributed_utils.all_reduce(tensor, group=distributed_utils.get_data_parallel_group())
    return tensor


def all_reduce_mean(tensors: List[torch.Tensor]) -> None:
    """Average tensors in place over the data-parallel workers."""
    world = data_parallel_world_size()
    if world <= 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    _all_reduce_sum(flat)
    flat /= world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def _is_master() -> bool:
    return data_parallel_rank() == 0


def _move_like(batch, reference):
    """Move ``batch`` to the device of ``reference``'s tokens."""
    device = None
    for v in reference["net_input"].values():
        if torch.is_tensor(v):
            device = v.device
            break
    if device is None or device.type == "cpu":
        return batch
    return utils.move_to_cuda(batch, device=device)


class BilevelSearchMixin:
    """See the module docstring."""

    # ------------------------------------------------------------------ setup
    def init_search_state(self, domain_names: List[str]) -> None:
        self.domain_names = list(domain_names)
        self.architect: Optional[BilevelArchitect] = None
        self.epoch_domain_probs: Dict[int, List[float]] = {}
        self._arch_iterators: Dict[int, iterators.EpochBatchIterator] = {}
        self._arch_current: Dict[int, object] = {}
        self._pending_state: Dict[str, object] = {}
        self._resume_checked = False
        self.domain_sampler = None
        if not self.domain_names:
            return
        probs = None
        if self.cfg.domain_probs:
            try:
                probs = [float(x) for x in self.cfg.domain_probs.split(",")]
            except ValueError:
                raise ValueError(f"--domain-probs must be comma-separated numbers, got {self.cfg.domain_probs!r}")
        self.domain_sampler = DomainSampler(len(self.domain_names), probs, self.cfg.eta_p)

    def setup_architect(self, model) -> None:
        """Create the architecture optimizer for a search model (called from build_model)."""
        core = unwrap_model(model)
        alphas = architecture_parameters(core)
        if not alphas:
            self.architect = None
            return
        if self.cfg.arch_order not in (1, 2):
            raise ValueError(f"--arch-order must be 1 or 2, got {self.cfg.arch_order}")
        try:
            betas = tuple(ast.literal_eval(self.cfg.arch_betas))
        except (ValueError, SyntaxError):
            raise ValueError(f"--arch-betas must look like '(0.5, 0.999)', got {self.cfg.arch_betas!r}")
        self.architect = BilevelArchitect(
            weight_parameters(core),
            alphas,
            order=self.cfg.arch_order,
            lr=self.cfg.arch_lr,
            betas=betas,
            weight_decay=self.cfg.arch_weight_decay,
            grad_sync=all_reduce_mean,
        )
        if "architect" in self._pending_state:
            self.architect.load_state_dict(self._pending_state.pop("architect"))

    # ------------------------------------------------------------------ fairseq hooks
    def build_model(self, cfg, *args, **kwargs):
        model = super().build_model(cfg, *args, **kwargs)
        self.setup_architect(model)
        return model

    def build_criterion(self, cfg, *args, **kwargs):
        criterion = super().build_criterion(cfg, *args, **kwargs)
        self.criterion_settings = {
            k: getattr(criterion, k) for k in ("struct_coef", "contrastive_coef", "triplet_margin") if hasattr(criterion, k)
        }
        return criterion

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1, num_shards=1,
                           shard_id=0, num_workers=0, epoch=1, data_buffer_size=0, disable_iterator_cache=False,
                           skip_remainder_batch=False, grouped_shuffling=False, update_epoch_batch_itr=False):
        if dataset is self.datasets.get(self.train_subset_name()):
            if dataset in self.dataset_to_epoch_iter and not update_epoch_batch_itr:
                return self.dataset_to_epoch_iter[dataset]
            itr = self.search_batch_iterator(
                dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs,
                required_batch_size_multiple, seed, num_shards, shard_id, num_workers, epoch,
                data_buffer_size, skip_remainder_batch, grouped_shuffling,
            )
            self.dataset_to_epoch_iter[dataset] = itr
            return itr
        return super().get_batch_iterator(
            dataset, max_tokens=max_tokens, max_sentences=max_sentences, max_positions=max_positions,
            ignore_invalid_inputs=ignore_invalid_inputs, required_batch_size_multiple=required_batch_size_multiple,
            seed=seed, num_shards=num_shards, shard_id=shard_id, num_workers=num_workers, epoch=epoch,
            data_buffer_size=data_buffer_size, disable_iterator_cache=disable_iterator_cache,
            skip_remainder_batch=skip_remainder_batch, grouped_shuffling=grouped_shuffling,
            update_epoch_batch_itr=update_epoch_batch_itr,
        )

    # ------------------------------------------------------------------ task state
    def state_dict(self):
        state = {
            "domain_names": list(self.domain_names),
            "domain_sampler": self.domain_sampler.state_dict(),
            "epoch_domain_probs": {int(k): list(v) for k, v in self.epoch_domain_probs.items()},
            "arch_iterators": {int(d): it.state_dict() for d, it in self._arch_iterators.items()},
        }
        if self.architect is not None:
            state["architect"] = self.architect.state_dict()
        elif "architect" in self._pending_state:
            state["architect"] = self._pending_state["architect"]
        return state

    def load_state_dict(self, state):
        if not state:
            return
        saved = state.get("domain_names")
        if saved is not None and list(saved) != self.domain_names:
            raise ValueError(
                f"checkpoint was made for domains {list(saved)}, this run has --domains {','.join(self.domain_names)}"
            )
        if "domain_sampler" in state:
            self.domain_sampler.load_state_dict(state["domain_sampler"])
        self.epoch_domain_probs = {int(k): list(v) for k, v in state.get("epoch_domain_probs", {}).items()}
        self._pending_state["arch_iterators"] = dict(state.get("arch_iterators", {}))
        if "architect" in state:
            if self.architect is not None:
                self.architect.load_state_dict(state["architect"])
            else:
                self._pending_state["architect"] = state["architect"]

    def restore_search_state(self) -> None:
        """Load the task state of the checkpoint that fairseq-train resumes from.

        fairseq's trainer restores model, optimizer and iterator but not the task state, so the
        task reads it itself, from the file fairseq chose (``--restore-file``, by default
        ``<save-dir>/checkpoint_last.pt``), unless ``--reset-optimizer``.
        """
        if self._resume_checked:
            return
        self._resume_checked = True
        if self.cfg.reset_optimizer:
            return
        restore = self.cfg.restore_file or "checkpoint_last.pt"
        path = os.path.join(self.cfg.save_dir, restore) if restore == "checkpoint_last.pt" else restore
        if not os.path.isfile(path):
            return
        from fairseq import checkpoint_utils

        state = checkpoint_utils.load_checkpoint_to_cpu(path)
        if state.get("task_state"):
            logger.info(f"restoring architecture optimizer, p and search iterators from {path}")
            self.load_state_dict(state["task_state"])

    # ------------------------------------------------------------------ training batches
    def domain_probs_for_epoch(self, epoch: int) -> List[float]:
        if epoch not in self.epoch_domain_probs:
            self.epoch_domain_probs[epoch] = self.domain_sampler.probs.tolist()
        return self.epoch_domain_probs[epoch]

    def search_batch_iterator(
        self,
        dataset: MultiDomainDataset,
        max_tokens=None,
        max_sentences=None,
        max_positions=None,
        ignore_invalid_inputs=False,
        required_batch_size_multiple=1,
        seed=1,
        num_shards=1,
        shard_id=0,
        num_workers=0,
        epoch=1,
        data_buffer_size=0,
        skip_remainder_batch=False,
        grouped_shuffling=False,
    ) -> iterators.EpochBatchIterator:
        """Like fairseq's ``get_batch_iterator``, with every epoch's batches drawn by domain from p."""
        self.restore_search_state()
        dataset.set_epoch(epoch)
        base_seed = seed

        def make_batches(ds, ep):
            with data_utils.numpy_seed(base_seed + ep):
                indices = ds.ordered_indices()
            if max_positions is not None:
                indices = self.filter_indices_by_size(indices, ds, max_positions, ignore_invalid_inputs)
            per_entry = ds.batches_per_entry(indices, max_tokens, max_sentences, required_batch_size_multiple)
            probs = self.domain_probs_for_epoch(ep)
            entry_probs = [probs[d] for d in ds.domain_indices]
            rng = np.random.RandomState((base_seed * 100003 + ep) % (2**32))
            return draw_domain_batches(per_entry, entry_probs, rng)

        return iterators.EpochBatchIterator(
            dataset=dataset,
            collate_fn=dataset.collater,
            batch_sampler=make_batches,
            seed=seed,
            num_shards=num_shards,
            shard_id=shard_id,
            num_workers=num_workers,
            epoch=epoch,
            buffer_size=data_buffer_size,
            skip_remainder_batch=skip_remainder_batch,
            grouped_shuffling=grouped_shuffling,
        )

    # ------------------------------------------------------------------ architecture batches
    def arch_dataset(self) -> MultiDomainDataset:
        name = self.cfg.arch_subset
        if name not in self.datasets:
            self.load_dataset(name)
        return self.datasets[name]

    def next_arch_batch(self, domain: int):
        """Next batch of ``domain`` from the architecture split; an exhausted iterator restarts.

        Creating a DataLoader iterator draws a seed from torch's global RNG; that RNG (which
        fairseq reseeds every update, for dropout) is kept untouched so that a resumed run,
        which creates its iterators at other times, draws the same dropout masks.
        """
        with torch.random.fork_rng(devices=[]):
            ds = self.arch_dataset()
            if domain not in self._arch_iterators:
                entry = ds.entry_for_domain(domain)
                single = MultiDomainDataset([ds.datasets[entry]], [domain], [self.domain_names[domain]])
                it = self.get_batch_iterator(
                    dataset=single,
                    max_tokens=self.cfg.max_tokens,
                    max_sentences=self.cfg.batch_size,
                    seed=self.cfg.seed + 1 + domain,
                    num_shards=data_parallel_world_size(),
                    shard_id=data_parallel_rank(),
                    disable_iterator_cache=True,
                )
                saved = self._pending_state.get("arch_iterators", {}).pop(domain, None)
                if saved is not None:
                    it.load_state_dict(saved)
                self._arch_iterators[domain] = it
            it = self._arch_iterators[domain]
            restarts = 0
            while True:
                current = self._arch_current.get(domain)
                if current is None or not current.has_next():
                    if restarts == 2:
                        raise ValueError(
                            f"domain {self.domain_names[domain]!r}: subset {self.cfg.arch_subset}."
                            f"{self.domain_names[domain]} gives worker {data_parallel_rank()} no batch"
                        )
                    current = it.next_epoch_itr(shuffle=True)
                    self._arch_current[domain] = current
                    restarts += 1
                batch = next(current)
                # fairseq pads the shards of data-parallel workers with empty batches: skip them
                if batch:
                    return batch

    # ------------------------------------------------------------------ contrastive partners
    def partner_domain(self, domain: int, update_num: int, salt: int = 0) -> Optional[int]:
        """d' ~ p over the other domains (same draw on every worker for the same update)."""
        others = [d for d in range(len(self.domain_names)) if d != domain]
        if not others:
            return None
        p = self.domain_sampler.probs.numpy()[others]
        p = p / p.sum() if p.sum() > 0 else np.full(len(others), 1.0 / len(others))
        rng = np.random.RandomState((self.cfg.seed * 7919 + update_num * 31 + salt) % (2**32))
        return int(others[rng.choice(len(others), p=p)])

    def attach_partner(self, sample, dataset: MultiDomainDataset, update_num: int, salt: int = 0):
        """Attach ``sample["partner"]``: the same lines (translations) in another domain."""
        other = self.partner_domain(sample["domain"], update_num, salt)
        if other is None:
            return sample
        entry = dataset.entry_for_domain(other)
        sample["partner"] = _move_like(dataset.aligned_batch(entry, sample["id"].tolist()), sample)
        return sample

    # ------------------------------------------------------------------ the bilevel step
    def uses_contrastive(self, criterion) -> bool:
        return getattr(criterion, "contrastive_coef", 0) > 0 and len(self.domain_names) > 1

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()
        model.set_num_updates(update_num)
        core = unwrap_model(model)
        contrastive = self.uses_contrastive(criterion)
        if contrastive and not ignore_grad:  # the same partner batch serves both steps
            self.attach_partner(sample, self.datasets[self.train_subset_name()], update_num)
        logging_extra: Dict[str, float] = {}
        if self.architect is not None and update_num >= self.cfg.arch_start_update:
            logging_extra = self.architecture_step(sample, core, criterion, optimizer, update_num, ignore_grad)
        loss, sample_size, logging_output = criterion(model, sample)
        if ignore_grad:
            loss *= 0
        optimizer.backward(loss)
        if self.architect is not None:
            logging_output.update(logging_extra)
            logging_output.update(self.search_statistics(core))
            logging_output[STAT_COUNT] = 1
        return loss, sample_size, logging_output

    def architecture_step(self, sample, core, criterion, optimizer, update_num, dummy: bool) -> Dict[str, float]:
        world = data_parallel_world_size()
        observed = torch.zeros(2, len(self.domain_names), dtype=torch.float64)
        out: Dict[str, float] = {}
        if dummy:
            if world > 1:  # join the all-reduce with a zero contribution, as every worker must
                self.architect.apply_gradients([torch.zeros_like(a) for a in self.architect.alphas])
        else:
            domain = sample["domain"]
            arch_sample = _move_like(self.next_arch_batch(domain), sample)
            if self.uses_contrastive(criterion):
                arch_sample = self.attach_partner(arch_sample, self.arch_dataset(), update_num, salt=1)
            weight_lr = optimizer.get_lr()
            momentum, buffers = self._momentum(optimizer)
            stats = self.architect.step(
                lambda: criterion.weight_objective(core, sample),
                lambda: criterion.architecture_loss(core, arch_sample),
                weight_lr=weight_lr,
                weight_momentum=momentum,
                momentum_buffers=buffers,
            )
            observed[0, domain] = stats["arch_loss"]
            observed[1, domain] = 1.0
            out[STAT + "arch_loss"] = stats["arch_loss"]
        if world > 1:
            _all_reduce_sum(observed)
        for d in range(len(self.domain_names)):
            if observed[1, d] > 0:
                self.domain_sampler.observe(d, float(observed[0, d] / observed[1, d]))
        self.domain_sampler.update()
        return out

    def _momentum(self, optimizer):
        """Momentum and buffers of a fairseq SGD/NAG optimizer, for the virtual step (0 otherwise)."""
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or not hasattr(inner, "state"):
            return 0.0, None
        group = inner.param_groups[0] if inner.param_groups else {}
        momentum = float(group.get("momentum", 0.0) or 0.0)
        if momentum == 0.0:
            return 0.0, None
        buffers = [inner.state.get(w, {}).get("momentum_buffer") for w in self.architect.weights]
        return momentum, buffers

    def search_statistics(self, core) -> Dict[str, float]:
        """JS value, p per domain and the mean entropy of each architecture's softmax(alpha)."""
        stats: Dict[str, float] = {}
        with torch.no_grad():
            for alpha in architecture_parameters(core):
                stats[STAT + "js"] = float(js_structural_loss(alpha))
                probs = torch.softmax(alpha.double(), dim=-1)
                entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1).mean(-1)
                for name, h in zip(core.architecture_names, entropy.tolist()):
                    stats[STAT + f"alpha_entropy_{name}"] = h
        for name, p in zip(self.domain_names, self.domain_sampler.probs.tolist()):
            stats[STAT + f"p_{name}"] = p
        return stats

    # ------------------------------------------------------------------ outputs
    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        if epoch > 1:
            self.write_search_outputs(model, epoch - 1)

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        self.write_search_outputs(model, epoch)

    def write_search_outputs(self, model, epoch: int) -> Optional[str]:
        """Write genotype.json, genotypes/genotype_epoch{N}.json, alpha_history.jsonl and heatmaps."""
        core = unwrap_model(model)
        if not getattr(core, "is_search", False) or not _is_master() or not self.cfg.save_dir:
            return None
        alpha = architecture_parameters(core)[0].detach().cpu()
        genotype = derive_genotype(alpha, core.search_space, core.architecture_names)
        probs = torch.softmax(alpha.double(), dim=-1)
        extra = {
            "epoch": int(epoch),
            "alpha": {name: probs[k].tolist() for k, name in enumerate(core.architecture_names)},
            "param_counts": {
                "domains": {d: core.genotype_param_count(genotype, [d]) for d in genotype.domains},
                "multimodel": core.genotype_param_count(genotype),
            },
            "metrics": self._latest_metrics(),
            "settings": self.search_settings(core),
        }
        out_dir = self.cfg.save_dir
        path = os.path.join(out_dir, "genotype.json")
        save_genotype(os.path.join(out_dir, "genotypes", f"genotype_epoch{epoch}.json"), genotype, extra)
        save_genotype(path, genotype, extra)
        self._append_history(os.path.join(out_dir, "alpha_history.jsonl"), extra)
        if not self.cfg.no_alpha_heatmaps:
            from ..viz.heatmap import save_alpha_heatmaps

            save_alpha_heatmaps(probs, core.search_space, core.architecture_names,
                                os.path.join(out_dir, "heatmaps"), epoch=epoch)
        logger.info(f"epoch {epoch}: genotype written to {path}; multimodel parameters "
                    f"{extra['param_counts']['multimodel']}")
        return path

    @staticmethod
    def _append_history(path: str, extra: dict) -> None:
        entries = []
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                entries = [json.loads(line) for line in f if line.strip()]
        entries = [e for e in entries if e.get("epoch") != extra["epoch"]]
        entries.append({"epoch": extra["epoch"], "alpha": extra["alpha"], "metrics": extra["metrics"]})
        entries.sort(key=lambda e: e["epoch"])
        atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in entries))

    @staticmethod
    def _latest_metrics() -> Dict[str, float]:
        out: Dict[str, float] = {}
        for agg in ("train", "valid"):
            try:
                values = metrics.get_smoothed_values(agg)
            except Exception:  # aggregator not created yet
                continue
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"{agg}_{k}"] = float(v)
        return out

    def search_settings(self, core) -> Dict[str, object]:
        cfg = self.cfg
        settings = {
            "domains": list(self.domain_names),
            "arch_order": cfg.arch_order,
            "arch_lr": cfg.arch_lr,
            "arch_weight_decay": cfg.arch_weight_decay,
            "eta_p": cfg.eta_p,
            "seed": cfg.seed,
        }
        settings.update(getattr(self, "criterion_settings", {}))
        return settings
