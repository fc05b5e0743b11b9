"""What the criterion and the tasks log, in a form that fairseq can sum across workers.

fairseq's fast statistics sync (``logging_outputs_can_be_summed``) all-reduces the values of a
logging output by POSITION: every worker must send the same keys in the same order with the same
types, whatever domain its batch holds and whether its batch is a padding (dummy) batch. So
every logging output holds

* per-domain sums as vectors over ALL domains of the task: ``DOMAIN_LOSS`` (summed cross-entropy,
  a tensor on the model's device), ``DOMAIN_SIZE`` (tokens or sentences, a CPU tensor: sizes are
  known on the host);
* statistics as (sum, count) pairs that are present even when their count is 0.

Values stay tensors until fairseq's meters are read at log time: nothing here synchronises the
host with the device.
"""

import math
from typing import Dict, List, Optional, Sequence

import torch
from fairseq import metrics, utils

DOMAIN_LOSS = "domain_loss"
DOMAIN_SIZE = "domain_size"
TRIPLET, TRIPLET_COUNT = "triplet", "triplet_count"
# the search statistics of a train step (task): one record per update
SEARCH_COUNT = "search_count"
JS = "js"
ENTROPY = "alpha_entropy"  # (A,) one per architecture: mean entropy of softmax(alpha) over edges
MARGIN = "alpha_margin"  # (A,) mean best-minus-second weight per edge (non-none operations)
EXPECTED_PARAMS = (
    "alpha_params"  # (A,) expected cell parameters under softmax(alpha) / the largest cell
)
PROBS = "p"  # (D,) the domain distribution
ALPHA_LOSS, ALPHA_COUNT = "alpha_loss", "alpha_count"
ALPHA_SKIPPED = "alpha_skipped"


def domain_sums(
    per_sample: torch.Tensor,
    sizes: torch.Tensor,
    domains: torch.Tensor,
    batch_domain: Optional[int],
    num_domains: int,
) -> Dict[str, torch.Tensor]:
    """Per-domain vectors of summed losses (device) and sizes (CPU) of one batch.

    ``batch_domain`` is the domain of a domain-homogeneous batch, known on the host (every batch
    the tasks make is one); only a batch that mixes domains needs its sizes read from the device.
    """
    loss = per_sample.new_zeros(num_domains, dtype=torch.float32)
    if batch_domain is not None:
        loss[batch_domain] = per_sample.detach().float().sum()
        size = torch.zeros(num_domains, dtype=torch.float64)
        size[batch_domain] = (
            float(sizes) if not torch.is_tensor(sizes) else float(sizes.sum().cpu())
        )
    else:
        loss.index_add_(0, domains, per_sample.detach().float())
        size = torch.zeros(num_domains, dtype=torch.float64).index_add_(
            0, domains.cpu(), torch.as_tensor(sizes).cpu().double()
        )
    return {DOMAIN_LOSS: loss, DOMAIN_SIZE: size}


def _total(logging_outputs, key):
    return sum(log.get(key, 0) for log in logging_outputs)


def log_domain_metrics(logging_outputs: Sequence[dict], names: Sequence[str]) -> None:
    """``loss_<domain>`` (base 2, per token) and ``ppl_<domain>`` for every domain with data."""
    if not any(DOMAIN_SIZE in log for log in logging_outputs):
        return
    loss, size = _total(logging_outputs, DOMAIN_LOSS), _total(logging_outputs, DOMAIN_SIZE)
    size = torch.as_tensor(size).cpu()
    for d, name in enumerate(names):
        n = float(size[d])
        if n > 0:
            metrics.log_scalar(f"loss_{name}", loss[d] / n / math.log(2), n, round=3)
            metrics.log_derived(
                f"ppl_{name}", lambda m, k=f"loss_{name}": utils.get_perplexity(m[k].avg)
            )


def log_mean(
    logging_outputs: Sequence[dict],
    key: str,
    count_key: str,
    names: Optional[List[str]] = None,
    round: int = 4,
) -> None:
    """Mean of ``key`` over the records that count (a scalar, or one value per name)."""
    count = float(_total(logging_outputs, count_key))
    if count <= 0 or not any(key in log for log in logging_outputs):
        return
    value = _total(logging_outputs, key)
    if names is None:
        metrics.log_scalar(key, value / count, count, round=round)
        return
    for k, name in enumerate(names):
        metrics.log_scalar(f"{key}_{name}", value[k] / count, count, round=round)


def strip(logging_outputs: Sequence[dict], keys: Sequence[str]) -> List[dict]:
    """The logging outputs without ``keys`` (for a reducer that would misread them)."""
    return [{k: v for k, v in log.items() if k not in keys} for log in logging_outputs]
