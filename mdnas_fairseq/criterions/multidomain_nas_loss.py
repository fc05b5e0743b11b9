"""Criterion ``multidomain_nas_loss``: cross-entropy plus the structural and contrastive terms.

The loss is written once (:meth:`MultiDomainNASLoss.compute`); its three callers weigh it:

* weight step (``forward``, also validation): ``CE_sum + contrastive_coef * L_triplet * sample_size``
  (fairseq divides gradients by sample_size, so the triplet term keeps weight ``contrastive_coef``
  relative to the per-token cross-entropy);
* the virtual step of second-order search (:meth:`weight_objective`): the same per token,
  ``CE_mean + contrastive_coef * L_triplet``;
* alpha step (:meth:`alpha_objective`, on a held-out batch):
  ``CE_mean + contrastive_coef * L_triplet + struct_coef * L_struct(alpha)`` (docs/method.md).

The contrastive term needs a ``sample["partner"]`` batch of another domain, attached by the
task: for parallel text the translations of the sentences (labels: line ids), for images a
batch of another rotation (labels: classes). The representation of a sample is the model's
``domain_representation`` (the hidden state at <eos> for the language model).

Logged (see :mod:`mdnas_fairseq.log_schema`): loss and perplexity, per-domain loss sums that the
task turns into ``loss_<domain>`` / ``ppl_<domain>``, and the triplet value.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import CRITERION_REGISTRY, FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from .. import log_schema
from ..models.searchable import SearchableModel, unwrap_model
from ..registry import register_once
from ..search import (
    ParamPenalty,
    architecture_logits,
    batch_hard_triplet_loss,
    js_structural_loss,
)


@dataclass
class MultiDomainNASLossConfig(FairseqDataclass):
    struct_coef: float = field(
        default=0.0,
        metadata={"help": "beta_struct: weight of the Jensen-Shannon structural regularizer"},
    )
    contrastive_coef: float = field(
        default=0.0,
        metadata={
            "help": "beta_trip: weight of the cross-domain triplet (contrastive) regularizer"
        },
    )
    triplet_margin: float = field(
        default=1.0, metadata={"help": "margin of the batch-hard triplet loss"}
    )
    param_coef: float = field(
        default=0.0,
        metadata={
            "help": "beta_param: adds beta_param * the expected parameter count of the batch's architecture "
            "under softmax(alpha), as a fraction of the largest cell, to the alpha step's objective"
        },
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "epsilon of label smoothing (as fairseq's label_smoothed_cross_entropy; "
            "translation); the objective and the logged loss are smoothed, nll_loss and ppl not"
        },
    )
    sentence_avg: bool = II("optimization.sentence_avg")


class Loss(NamedTuple):
    """The pieces of the loss on one batch."""

    ce_sum: torch.Tensor  # summed token cross-entropy
    per_sample: torch.Tensor  # (B,) summed cross-entropy of each sample
    sample_size: int  # tokens (or sentences with --sentence-avg)
    triplet: Optional[torch.Tensor]  # None without the contrastive term or a partner batch
    nll_sum: Optional[torch.Tensor] = None  # with --label-smoothing: the unsmoothed ce_sum

    @property
    def ce_mean(self) -> torch.Tensor:
        return self.ce_sum / max(self.sample_size, 1)


class MultiDomainNASLoss(FairseqCriterion):
    def __init__(
        self,
        task,
        struct_coef=0.0,
        contrastive_coef=0.0,
        triplet_margin=1.0,
        param_coef=0.0,
        sentence_avg=False,
        label_smoothing=0.0,
    ):
        super().__init__(task)
        if min(struct_coef, contrastive_coef, param_coef) < 0:
            raise ValueError(
                f"--struct-coef, --contrastive-coef and --param-coef must be >= 0, got {struct_coef}, "
                f"{contrastive_coef}, {param_coef}"
            )
        self.struct_coef = struct_coef
        self.contrastive_coef = contrastive_coef
        self.triplet_margin = triplet_margin
        self.param_coef = param_coef
        self.sentence_avg = sentence_avg
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self._penalty: Optional[ParamPenalty] = None

    # ------------------------------------------------------------------ the loss, once
    def compute(self, model, sample) -> Loss:
        net_output = model(**self.net_input(model, sample))
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        target = model.get_targets(sample, net_output)
        per_token = F.nll_loss(
            lprobs.reshape(-1, lprobs.size(-1)),
            target.reshape(-1),
            ignore_index=self.padding_idx,
            reduction="none",
        )
        nll_sum = None
        if (
            self.label_smoothing > 0
        ):  # fairseq's smoothing: (1 - eps - eps_i) nll + eps_i sum(-lprobs)
            nll_sum = per_token.sum()
            per_token, _ = label_smoothed_nll_loss(
                lprobs.reshape(-1, lprobs.size(-1)),
                target.reshape(-1, 1),
                self.label_smoothing,
                ignore_index=self.padding_idx,
                reduce=False,
            )
        per_sample = per_token.reshape(target.shape[0], -1).sum(dim=1)
        sample_size = sample["nsentences"] if self.sentence_avg else sample["ntokens"]
        triplet = None
        if self.contrastive_coef > 0 and sample.get("partner") is not None:
            triplet = self.triplet(model, net_output, sample)
        return Loss(per_sample.sum(), per_sample, sample_size, triplet, nll_sum)

    @staticmethod
    def net_input(model, sample) -> dict:
        """The model's inputs: a plain fairseq model (a baseline trained on the union of the domains)
        gets the sample without its domain tags."""
        if isinstance(unwrap_model(model), SearchableModel):
            return sample["net_input"]
        return {k: v for k, v in sample["net_input"].items() if k not in ("domain", "batch_domain")}

    def triplet(self, model, net_output, sample) -> torch.Tensor:
        """Batch-hard triplet loss between ``sample`` and its attached ``partner`` batch.

        The partner goes through the unwrapped model: a second forward through a data-parallel
        wrapper before the backward would confuse its gradient bookkeeping.
        """
        partner = sample["partner"]
        core = unwrap_model(model)
        partner_output = core(**partner["net_input"])
        h_a = core.domain_representation(net_output, sample)
        h_b = core.domain_representation(partner_output, partner)
        return batch_hard_triplet_loss(
            h_a,
            self.task.triplet_labels(sample),
            h_b,
            self.task.triplet_labels(partner),
            self.triplet_margin,
        )

    # ------------------------------------------------------------------ its three uses
    def forward(self, model, sample, reduce=True):
        """The weight-step loss (and the validation loss)."""
        out = self.compute(model, sample)
        loss = out.ce_sum
        if out.triplet is not None:
            loss = loss + self.contrastive_coef * out.triplet * out.sample_size
        return loss, out.sample_size, self.logging_output(sample, out)

    def weight_objective(self, model, sample) -> torch.Tensor:
        """The training objective per token (what the virtual step of second-order search descends)."""
        out = self.compute(model, sample)
        return out.ce_mean + (
            self.contrastive_coef * out.triplet if out.triplet is not None else 0.0
        )

    def alpha_objective(self, model, sample) -> Tuple[torch.Tensor, torch.Tensor]:
        """(objective, cross-entropy per token) of the alpha step on a held-out batch.

        The cross-entropy alone is the domain's held-out loss that the robust domain
        distribution p follows (docs/method.md); the objective adds the regularizers.
        """
        out = self.compute(model, sample)
        objective = out.ce_mean
        if out.triplet is not None:
            objective = objective + self.contrastive_coef * out.triplet
        if self.struct_coef > 0:
            objective = objective + self.struct_coef * self.structural_loss(model)
        if self.param_coef > 0:
            objective = objective + self.param_coef * self.parameter_penalty(model, sample)
        return objective, out.ce_mean.detach()

    @staticmethod
    def structural_loss(model) -> torch.Tensor:
        alphas = architecture_logits(unwrap_model(model))  # disallowed ops masked
        return sum(js_structural_loss(a) for a in alphas)

    def parameter_penalty(self, model, sample) -> torch.Tensor:
        """Expected parameters of the batch's architecture under its mixing probabilities, as a fraction
        of the largest cell (:class:`~mdnas_fairseq.search.ParamPenalty`; differentiable in alpha)."""
        network = unwrap_model(model).network
        if self._penalty is None:
            self._penalty = ParamPenalty(network.param_table())
        batch_domain = sample["net_input"].get("batch_domain")
        if batch_domain is not None:
            return self._penalty(
                network.alphas.mixing_probs(network.architectures.row(batch_domain))
            )
        rows = network.architectures.rows_of(sample["net_input"]["domain"])
        return self._penalty(network.alphas.mixing_probs(rows)).mean()

    # ------------------------------------------------------------------ metrics
    def logging_output(self, sample, out: Loss) -> Dict[str, object]:
        """The same keys, in the same order, for every batch of a run (see :mod:`..log_schema`)."""
        net_input = sample["net_input"]
        sizes = out.sample_size
        batch_domain = net_input.get("batch_domain")
        if batch_domain is None:  # a batch that mixes domains: sizes per sample
            nonpad = sample["target"] != self.padding_idx
            sizes = (
                torch.ones(len(out.per_sample))
                if self.sentence_avg
                else nonpad.reshape(len(out.per_sample), -1).sum(1)
            )
        logging_output = {
            "loss": out.ce_sum.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": out.sample_size,
        }
        if out.nll_sum is not None:
            logging_output["nll_loss"] = out.nll_sum.data
        logging_output.update(
            log_schema.domain_sums(
                out.per_sample,
                sizes,
                net_input.get("domain"),
                batch_domain,
                len(self.task.domain_names),
            )
        )
        if self.contrastive_coef > 0:
            computed = out.triplet is not None
            logging_output[log_schema.TRIPLET] = (
                out.triplet.detach() if computed else out.ce_sum.new_zeros(())
            )
            logging_output[log_schema.TRIPLET_COUNT] = 1 if computed else 0
        return logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Loss and perplexity over all domains; the task logs the per-domain values."""

        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        loss_sum, sample_size, ntokens = total("loss"), total("sample_size"), total("ntokens")
        metrics.log_scalar(
            "loss", loss_sum / max(sample_size, 1) / math.log(2), sample_size, round=3
        )
        nll_sum = total("nll_loss") if any("nll_loss" in log for log in logging_outputs) else None
        if sample_size != ntokens or nll_sum is not None:
            nll_sum = loss_sum if nll_sum is None else nll_sum
            metrics.log_scalar(
                "nll_loss", nll_sum / max(ntokens, 1) / math.log(2), ntokens, round=3
            )
            metrics.log_derived("ppl", lambda m: utils.get_perplexity(m["nll_loss"].avg))
        else:
            metrics.log_derived("ppl", lambda m: utils.get_perplexity(m["loss"].avg))
        log_schema.log_mean(logging_outputs, log_schema.TRIPLET, log_schema.TRIPLET_COUNT)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


register_once(
    CRITERION_REGISTRY,
    "multidomain_nas_loss",
    lambda: register_criterion("multidomain_nas_loss", dataclass=MultiDomainNASLossConfig)(
        MultiDomainNASLoss
    ),
)
