"""Contrastive partner batches: the same items (the translations of a batch's sentences, or the
same images) in another domain d' ~ p, d' != d.

The draw of d' is made on the host with a seed of the update number, so every worker draws the
same d' for the same update, and uses p as it stood at the start of the epoch (the p that laid
out the epoch's batches), so no per-step read of p from the device is needed.
"""

from typing import Optional, Sequence

import numpy as np

from ...data import MultiDomainDataset
from .precision import to_model


def partner_domain(
    domain: int, probs: Sequence[float], seed: int, update_num: int, salt: int = 0
) -> Optional[int]:
    """d' ~ p over the domains other than ``domain`` (None with a single domain)."""
    others = [d for d in range(len(probs)) if d != domain]
    if not others:
        return None
    p = np.asarray(probs, dtype=np.float64)[others]
    p = p / p.sum() if p.sum() > 0 else np.full(len(others), 1.0 / len(others))
    rng = np.random.RandomState((seed * 7919 + update_num * 31 + salt) % (2**32))
    return int(others[rng.choice(len(others), p=p)])


def attach_partner(sample: dict, dataset: MultiDomainDataset, other: Optional[int], core) -> dict:
    """Attach ``sample["partner"]``: the items of ``sample`` (by their host-side ``local_ids``) in
    domain ``other``, on the model's device and in its dtype."""
    if other is None:
        return sample
    entry = dataset.entry_for_domain(other)
    sample["partner"] = to_model(dataset.aligned_batch(entry, sample["local_ids"]), core)
    return sample
