"""The architecture half of the bilevel step: one alpha update per weight update.

With ``--update-freq k`` fairseq calls the task's ``train_step`` k times per update (same
``update_num``); the alpha step runs on the FIRST of them, on a held-out batch of that
sub-batch's domain, so every update takes exactly one alpha step (and one update of p), and the k
weight gradients all see the new alpha.

Data-parallel workers: each computes its alpha gradient (a padding/dummy batch contributes zeros
and is not counted), then one all-reduce on the model's device sums, in one buffer, the
gradients, the number of contributing workers and the per-domain held-out cross-entropies; the
mean gradient is applied by every worker's Adam, so alpha stays identical on all workers. An
fp16 step whose scaled gradient overflowed (on any worker) is skipped by all of them and the
alpha-step loss scale halved; it doubles again after the fp16 scale window's steps without
overflow (:class:`~.precision.AlphaLossScale`, logged as ``alpha_scale_factor``).
"""

import logging
from typing import Dict, List

import torch

from ... import log_schema
from ...search import ParamPenalty, architecture_logits, decisiveness, js_structural_loss
from . import distributed, partners
from .optimizers import virtual_step_for
from .precision import is_fp16, loss_scale, scale_window, to_model

logger = logging.getLogger(__name__)


def alpha_step(
    host, sample, core, criterion, optimizer, update_num: int, dummy: bool
) -> Dict[str, object]:
    """Take this update's alpha step if it is due; returns the search statistics to log."""
    first = update_num != host.search.last_alpha_update
    host.search.last_alpha_update = update_num
    due = first and update_num >= host.cfg.alpha_start_update
    loss, counted, skipped = None, 0, 0
    if due:
        loss, counted, skipped = _step(host, sample, core, criterion, optimizer, update_num, dummy)
    return search_statistics(host, core, first, loss, counted, skipped)


def _step(host, sample, core, criterion, optimizer, update_num, dummy):
    architect = host.search.architect
    num_domains = len(host.domain_names)
    alphas = architect.alphas
    grads: List[torch.Tensor] = [torch.zeros_like(a) for a in alphas]
    ce_sum = alphas[0].new_zeros(num_domains)
    ce_count = alphas[0].new_zeros(num_domains)
    loss = None
    if not dummy:
        domain = sample["domain"]
        heldout = to_model(host.search.heldout.next(domain), core)
        if host.uses_contrastive(criterion):
            other = partners.partner_domain(
                domain, host.partner_probs(), host.cfg.seed, update_num, salt=1
            )
            partners.attach_partner(heldout, host.search.heldout.dataset(), other, core)
        virtual = (
            virtual_step_for(optimizer, architect.trainable_weights, host.cfg.clip_norm)
            if architect.order == 2
            else None
        )
        scale = host.search.alpha_scale.scale(loss_scale(optimizer)) if is_fp16(optimizer) else 1.0
        result = architect.alpha_gradients(
            lambda: criterion.weight_objective(core, sample),
            lambda: criterion.alpha_objective(core, heldout),
            virtual_step=virtual,
            loss_scale=scale,
        )
        grads = [g.to(a.dtype) for g, a in zip(result["grads"], alphas)]
        loss = result["val_loss"].float()
        ce_sum[domain] = result["extras"].float()
        ce_count[domain] = 1.0
    # one all-reduce: [gradients..., contributing workers, per-domain CE sums, per-domain CE counts]
    flat = torch.cat(
        [g.reshape(-1) for g in grads]
        + [alphas[0].new_full((1,), 0.0 if dummy else 1.0), ce_sum, ce_count]
    )
    distributed.all_reduce_sum_(flat)
    if is_fp16(optimizer):  # one host read per update, the same on every worker
        overflow = not bool(torch.isfinite(flat).all())
        if _update_alpha_scale(host, optimizer, overflow, update_num):
            return loss, 0, 1
    sizes = [a.numel() for a in alphas]
    pieces = torch.split(flat, sizes + [1, num_domains, num_domains])
    workers = pieces[len(alphas)].clamp_min(1.0)
    architect.apply_gradients([p.view_as(a) / workers for p, a in zip(pieces, alphas)])
    sampler = host.search.domain_sampler
    if sampler.eta_p > 0:
        sums, counts = pieces[-2], pieces[-1]
        sampler.observe(sums / counts.clamp_min(1.0), counts > 0)
        sampler.update()
    return loss, (0 if dummy else 1), 0


def _update_alpha_scale(host, optimizer, overflow: bool, update_num: int) -> bool:
    """Halve the alpha step's loss-scale factor after an overflow, double it after a window without;
    log it. True when this step overflowed (and is skipped)."""
    from fairseq import metrics

    alpha_scale = host.search.alpha_scale
    changed = alpha_scale.update(overflow, loss_scale(optimizer), scale_window(optimizer))
    if overflow:
        logger.warning(
            f"update {update_num}: alpha gradient overflowed in fp16; step skipped, "
            f"alpha-step loss scale factor now {alpha_scale.factor:g}"
        )
    elif changed:
        logger.info(
            f"update {update_num}: {scale_window(optimizer)} alpha steps in a row with finite "
            f"gradients; alpha-step loss scale factor now {alpha_scale.factor:g}"
        )
    metrics.log_scalar("alpha_scale_factor", alpha_scale.factor, weight=0, priority=710, round=4)
    return overflow


def search_statistics(
    host, core, first: bool, loss, counted: int, skipped: int
) -> Dict[str, object]:
    """The search's log record of one train step: the same keys, in the same order, on every worker
    and every sub-batch (only the update's first sub-batch counts), see :mod:`...log_schema`."""
    alpha = architecture_logits(core)[0].detach()  # disallowed ops masked
    if host.search.penalty is None:
        host.search.penalty = ParamPenalty(core.network.param_table())
    with torch.no_grad():
        entropy, margin = decisiveness(alpha.double(), core.search_space, logits=True)
        js = js_structural_loss(alpha.double())
        expected = host.search.penalty(core.network.alphas.mixing_probs().double())
    p = host.search.domain_sampler.probs
    if not first:
        entropy, margin, js, p, expected = (
            torch.zeros_like(t) for t in (entropy, margin, js, p, expected)
        )
    return {
        log_schema.SEARCH_COUNT: 1 if first else 0,
        log_schema.JS: js,
        log_schema.ENTROPY: entropy,
        log_schema.MARGIN: margin,
        log_schema.EXPECTED_PARAMS: expected,
        log_schema.PROBS: p.to(alpha.device),
        log_schema.ALPHA_LOSS: loss if loss is not None else alpha.new_zeros(()).float(),
        log_schema.ALPHA_COUNT: counted,
        log_schema.ALPHA_SKIPPED: skipped,
    }


def log_search_metrics(logging_outputs, domain_names, architecture_names) -> None:
    """Means over updates of the search statistics (train only)."""
    log_schema.log_mean(logging_outputs, log_schema.JS, log_schema.SEARCH_COUNT)
    log_schema.log_mean(
        logging_outputs, log_schema.ENTROPY, log_schema.SEARCH_COUNT, list(architecture_names)
    )
    log_schema.log_mean(
        logging_outputs, log_schema.MARGIN, log_schema.SEARCH_COUNT, list(architecture_names)
    )
    log_schema.log_mean(
        logging_outputs,
        log_schema.EXPECTED_PARAMS,
        log_schema.SEARCH_COUNT,
        list(architecture_names),
    )
    log_schema.log_mean(
        logging_outputs, log_schema.PROBS, log_schema.SEARCH_COUNT, list(domain_names)
    )
    log_schema.log_mean(logging_outputs, log_schema.ALPHA_LOSS, log_schema.ALPHA_COUNT)
    skipped = sum(log.get(log_schema.ALPHA_SKIPPED, 0) for log in logging_outputs)
    if any(log_schema.ALPHA_SKIPPED in log for log in logging_outputs) and float(skipped) > 0:
        from fairseq import metrics

        metrics.log_scalar_sum(log_schema.ALPHA_SKIPPED, skipped)
