"""Datasets of several domains, batched so that every batch holds one domain.

:class:`MultiDomainDataset` concatenates one fairseq dataset per domain. Its batches never mix
domains, and every collated batch says which domain it holds: ``sample["domain"]`` and
``net_input["batch_domain"]`` (host ints) and ``net_input["domain"]`` (one index per sentence, a
tensor; models and ``fairseq-eval-lm``'s scorer get both through ``model(**net_input)``).

:func:`draw_domain_batches` lays out a training epoch: as many batches as the domains have
together, each drawn from a domain d ~ Categorical(p), cycling through that domain's batches in
a fresh random order whenever they run out.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils


class MultiDomainDataset(FairseqDataset):
    """Concatenation of per-domain datasets with domain-homogeneous batches.

    Args:
        datasets: one dataset per domain entry (same collater format, e.g. MonolingualDataset).
        domain_indices: the global domain index of each entry (a dataset may hold a subset of
            the task's domains, e.g. one domain for ``fairseq-eval-lm``).
        domain_names: names, for messages.
    """

    def __init__(
        self,
        datasets: Sequence[FairseqDataset],
        domain_indices: Sequence[int],
        domain_names: Sequence[str],
    ):
        super().__init__()
        if (
            not datasets
            or len(datasets) != len(domain_indices)
            or len(datasets) != len(domain_names)
        ):
            raise ValueError("need one domain index and name per dataset")
        self.datasets = list(datasets)
        self.domain_indices = list(domain_indices)
        self.domain_names = list(domain_names)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
        self._sizes = np.concatenate([np.asarray(d.sizes, dtype=np.int64) for d in self.datasets])

    # ------------------------------------------------------------------ indexing
    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int):
        """(entry, local index) of a global index."""
        entry = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return entry, int(index - self.offsets[entry])

    def entry_of(self, indices: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, indices, side="right") - 1

    def __getitem__(self, index: int):
        entry, local = self.locate(index)
        return {"entry": entry, "item": self.datasets[entry][local]}

    def entry_for_domain(self, domain_index: int) -> int:
        try:
            return self.domain_indices.index(domain_index)
        except ValueError:
            raise KeyError(
                f"this dataset has no domain {domain_index} (it holds {self.domain_names})"
            ) from None

    # ------------------------------------------------------------------ batches
    def collater(self, samples):
        if not samples:
            return {}
        entries = {s["entry"] for s in samples}
        if len(entries) != 1:
            raise ValueError(
                f"a batch mixes domains {sorted(self.domain_names[e] for e in entries)}"
            )
        entry = entries.pop()
        return self.collate_domain(entry, [s["item"] for s in samples])

    def collate_domain(self, entry: int, items) -> dict:
        """Collate items of entry ``entry`` and tag the batch with its domain.

        Host-side (never moved to the device, so reading them needs no synchronisation):
        ``sample["domain"]`` and ``net_input["batch_domain"]``, the batch's domain index, and
        ``sample["local_ids"]``, the items' indices within their domain (the contrastive partner
        batch takes the same indices in another domain).
        """
        batch = self.datasets[entry].collater(items)
        if not batch:
            return batch
        domain = self.domain_indices[entry]
        batch["domain"] = domain
        batch["local_ids"] = np.asarray([item["id"] for item in items], dtype=np.int64)
        batch["net_input"]["domain"] = torch.full((len(items),), domain, dtype=torch.long)
        batch["net_input"]["batch_domain"] = domain
        return batch

    def subset_of_domain(self, domain_index: int) -> MultiDomainDataset:
        """A dataset of this one domain's entry (same domain index)."""
        entry = self.entry_for_domain(domain_index)
        return MultiDomainDataset(
            [self.datasets[entry]], [domain_index], [self.domain_names[entry]]
        )

    def aligned_batch(self, entry: int, local_ids: Sequence[int]) -> dict:
        """The batch of entry ``entry`` with the given local (line) indices: translations of a batch."""
        ds = self.datasets[entry]
        return self.collate_domain(entry, [ds[int(i)] for i in local_ids])

    def num_tokens(self, index: int) -> int:
        return int(self._sizes[index])

    def num_tokens_vec(self, indices):
        return self._sizes[indices]

    def size(self, index: int):
        return int(self._sizes[index])

    @property
    def sizes(self):
        return self._sizes

    def ordered_indices(self):
        """Shuffled, then stably sorted by size (fairseq's usual order for LM data)."""
        order = np.random.permutation(len(self))
        return order[np.argsort(self._sizes[order], kind="mergesort")]

    def batches_per_entry(
        self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1
    ):
        """Batch each entry's indices separately: a list (per entry) of lists of index arrays."""
        indices = np.asarray(indices, dtype=np.int64)
        entries = self.entry_of(indices)
        out = []
        for e in range(len(self.datasets)):
            mine = indices[entries == e]
            if len(mine) == 0:
                out.append([])
                continue
            batches = list(
                data_utils.batch_by_size(
                    mine,
                    num_tokens_fn=self.num_tokens,
                    num_tokens_vec=self.num_tokens_vec(mine),
                    max_tokens=max_tokens,
                    max_sentences=max_sentences,
                    required_batch_size_multiple=required_batch_size_multiple,
                )
            )
            # fairseq 0.12 drops a last batch whose size is not a multiple of
            # required_batch_size_multiple (default 8; fairseq issue #5036): per domain that loses
            # up to 7 sentences of every split, test sets included. Batches cover ``mine`` in
            # order, so what was dropped is its tail: keep it as a last, smaller batch.
            covered = sum(len(b) for b in batches)
            if covered < len(mine):
                batches.append(mine[covered:])
            out.append(batches)
        return out

    def batch_by_size(
        self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1, **kw
    ):
        """Domain-homogeneous batches, one domain after the other (validation and evaluation)."""
        return [
            b
            for batches in self.batches_per_entry(
                indices, max_tokens, max_sentences, required_batch_size_multiple
            )
            for b in batches
        ]

    def filter_indices_by_size(self, indices, max_sizes):
        """Drop sentences longer than ``max_sizes``; returns (kept, ignored)."""
        if isinstance(max_sizes, (int, float)):
            keep = self._sizes[indices] <= max_sizes
            return indices[keep], indices[~keep].tolist()
        return data_utils._filter_by_size_dynamic(indices, self.size, max_sizes)

    @property
    def supports_prefetch(self):
        return False

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)


def draw_domain_batches(
    per_entry: Sequence[Sequence[np.ndarray]], probs: Sequence[float], rng: np.random.RandomState
) -> List[np.ndarray]:
    """An epoch of batches whose domains are drawn from Categorical(probs).

    Args:
        per_entry: the batches of each domain (entry order = probability order).
        probs: p over the entries; entries without batches are left out and p renormalised.
        rng: the random state (seeded identically on every worker so all agree).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(per_entry),):
        raise ValueError(f"{len(probs)} probabilities for {len(per_entry)} domains")
    available = np.array([len(b) > 0 for b in per_entry])
    p = np.where(available, probs, 0.0)
    if p.sum() <= 0:
        raise ValueError("no domain with a positive probability has any batch")
    p = p / p.sum()
    total = sum(len(b) for b in per_entry)
    draws = rng.choice(len(per_entry), size=total, p=p)
    queues: List[List[int]] = [[] for _ in per_entry]
    out = []
    for e in draws:
        if not queues[e]:
            queues[e] = list(rng.permutation(len(per_entry[e])))
        out.append(per_entry[e][queues[e].pop()])
    return out
