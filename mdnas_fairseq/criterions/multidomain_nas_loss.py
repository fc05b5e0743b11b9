"""Criterion ``multidomain_nas_loss``: cross-entropy plus the structural and contrastive terms.

* weight step:       CE_sum + contrastive_coef * L_triplet * sample_size
  (fairseq divides gradients by sample_size, so the triplet term keeps weight
  ``contrastive_coef`` relative to the per-token cross-entropy);
* architecture step: CE_mean + contrastive_coef * L_triplet + struct_coef * L_struct(alpha)
  (:meth:`MultiDomainNASLoss.architecture_loss`; METHOD.md section 3).

The contrastive term needs a ``sample["partner"]`` batch of another domain, attached by the
task: for parallel text the translations of the sentences (labels: line ids), for images a
batch of another rotation (labels: classes). The representation of a sample is the model's
``domain_representation`` (the hidden state at <eos> for the language model).

Logged: per-domain loss and perplexity (``loss_en``, ``ppl_en``), and from the task, the JS
value, the triplet value, p per domain and the mean entropy of each domain's alpha.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import CRITERION_REGISTRY, FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from ..search import architecture_parameters, batch_hard_triplet_loss, js_structural_loss

DOMAIN_LOSS = "dloss:"
DOMAIN_SIZE = "dsize:"
STAT = "stat:"
STAT_COUNT = "stat_count"


@dataclass
class MultiDomainNASLossConfig(FairseqDataclass):
    struct_coef: float = field(
        default=0.0, metadata={"help": "beta_struct: weight of the Jensen-Shannon structural regularizer"}
    )
    contrastive_coef: float = field(
        default=0.0, metadata={"help": "beta_trip: weight of the cross-domain triplet (contrastive) regularizer"}
    )
    triplet_margin: float = field(default=1.0, metadata={"help": "margin of the batch-hard triplet loss"})
    sentence_avg: bool = II("optimization.sentence_avg")


def unwrap_model(model):
    """The model inside fairseq's data-parallel wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


class MultiDomainNASLoss(FairseqCriterion):
    def __init__(self, task, struct_coef=0.0, contrastive_coef=0.0, triplet_margin=1.0, sentence_avg=False):
        super().__init__(task)
        if struct_coef < 0 or contrastive_coef < 0:
            raise ValueError(f"--struct-coef and --contrastive-coef must be >= 0, got {struct_coef}, {contrastive_coef}")
        self.struct_coef = struct_coef
        self.contrastive_coef = contrastive_coef
        self.triplet_margin = triplet_margin
        self.sentence_avg = sentence_avg

    # ------------------------------------------------------------------ pieces
    def cross_entropy(self, model, net_output, sample) -> Tuple[torch.Tensor, torch.Tensor]:
        """(summed token loss, per-sample summed loss)."""
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        target = model.get_targets(sample, net_output)
        per_token = F.nll_loss(
            lprobs.reshape(-1, lprobs.size(-1)), target.reshape(-1), ignore_index=self.padding_idx, reduction="none"
        ).view(target.shape)
        per_sample = per_token.reshape(target.shape[0], -1).sum(dim=1)
        return per_sample.sum(), per_sample

    def triplet(self, model, net_output, sample) -> torch.Tensor:
        """Batch-hard triplet loss between ``sample`` and its attached ``partner`` batch."""
        partner = sample["partner"]
        core = unwrap_model(model)
        partner_output = model(**partner["net_input"])
        h_a = core.domain_representation(net_output, sample)
        h_b = core.domain_representation(partner_output, partner)
        return batch_hard_triplet_loss(
            h_a, self.task.triplet_labels(sample), h_b, self.task.triplet_labels(partner), self.triplet_margin
        )

    def _sample_size(self, sample) -> int:
        return sample["nsentences"] if self.sentence_avg else sample["ntokens"]

    def _use_contrastive(self, sample) -> bool:
        return self.contrastive_coef > 0 and sample.get("partner") is not None

    # ------------------------------------------------------------------ losses
    def forward(self, model, sample, reduce=True):
        """The weight-step loss (and the validation loss)."""
        net_output = model(**sample["net_input"])
        ce_sum, per_sample = self.cross_entropy(model, net_output, sample)
        sample_size = self._sample_size(sample)
        loss = ce_sum
        logging_output: Dict[str, float] = {
            "loss": ce_sum.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
        }
        self._log_per_domain(logging_output, sample, per_sample)
        if self._use_contrastive(sample):
            trip = self.triplet(model, net_output, sample)
            loss = loss + self.contrastive_coef * trip * sample_size
            logging_output[STAT + "triplet"] = float(trip.detach())
            logging_output[STAT_COUNT] = 1
        return loss, sample_size, logging_output

    def architecture_loss(self, model, sample, logging_output: Optional[dict] = None) -> torch.Tensor:
        """The architecture-step objective on a held-out batch (per-token mean CE + regularizers)."""
        net_output = model(**sample["net_input"])
        ce_sum, _ = self.cross_entropy(model, net_output, sample)
        loss = ce_sum / max(self._sample_size(sample), 1)
        if self._use_contrastive(sample):
            loss = loss + self.contrastive_coef * self.triplet(model, net_output, sample)
        if self.struct_coef > 0:
            loss = loss + self.struct_coef * self.structural_loss(model)
        return loss

    def weight_objective(self, model, sample) -> torch.Tensor:
        """The training objective as a per-token mean (the architect's virtual step uses it)."""
        net_output = model(**sample["net_input"])
        ce_sum, _ = self.cross_entropy(model, net_output, sample)
        loss = ce_sum / max(self._sample_size(sample), 1)
        if self._use_contrastive(sample):
            loss = loss + self.contrastive_coef * self.triplet(model, net_output, sample)
        return loss

    @staticmethod
    def structural_loss(model) -> torch.Tensor:
        alphas = architecture_parameters(unwrap_model(model))
        return sum(js_structural_loss(a) for a in alphas)

    def _log_per_domain(self, logging_output, sample, per_sample):
        names = self.task.domain_names
        domains = sample["net_input"].get("domain")
        if domains is None:
            return
        sizes = (sample["target"] != self.padding_idx).reshape(len(per_sample), -1).sum(dim=1)
        if self.sentence_avg:
            sizes = torch.ones_like(sizes)
        for d in domains.unique().tolist():
            mask = domains == d
            logging_output[DOMAIN_LOSS + names[d]] = float(per_sample[mask].detach().sum())
            logging_output[DOMAIN_SIZE + names[d]] = int(sizes[mask].sum())

    # ------------------------------------------------------------------ metrics
    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        loss_sum, sample_size, ntokens = total("loss"), total("sample_size"), total("ntokens")
        metrics.log_scalar("loss", float(loss_sum) / max(sample_size, 1) / math.log(2), sample_size, round=3)
        if sample_size != ntokens:
            metrics.log_scalar("nll_loss", float(loss_sum) / max(ntokens, 1) / math.log(2), ntokens, round=3)
            metrics.log_derived("ppl", lambda m: utils.get_perplexity(m["nll_loss"].avg))
        else:
            metrics.log_derived("ppl", lambda m: utils.get_perplexity(m["loss"].avg))
        keys = {k for log in logging_outputs for k in log}
        for key in sorted(k for k in keys if k.startswith(DOMAIN_LOSS)):
            name = key[len(DOMAIN_LOSS):]
            size = total(DOMAIN_SIZE + name)
            if size > 0:
                metrics.log_scalar(f"loss_{name}", total(key) / size / math.log(2), size, round=3)
                metrics.log_derived(
                    f"ppl_{name}", lambda m, n=name: utils.get_perplexity(m[f"loss_{n}"].avg)
                )
        count = total(STAT_COUNT)
        if count > 0:
            for key in sorted(k for k in keys if k.startswith(STAT)):
                metrics.log_scalar(key[len(STAT):], total(key) / count, count, round=4)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


if "multidomain_nas_loss" not in CRITERION_REGISTRY:
    register_criterion("multidomain_nas_loss", dataclass=MultiDomainNASLossConfig)(MultiDomainNASLoss)
