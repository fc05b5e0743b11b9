"""Sentence pairs of several domains, batched so that every batch holds one domain.

:class:`MultiDomainTranslationDataset` is :class:`~.multidomain_dataset.MultiDomainDataset` over
fairseq ``LanguagePairDataset`` entries: a sample's size is its (source, target) length pair,
which the size filter checks against (max source, max target) positions as fairseq's translation
task does, and a sample costs max(source, target) tokens when batches are laid out. A batch's
``id`` is unique over the domains (fairseq-generate prints it; ``local_ids`` has the ids within the
domain).
"""

from __future__ import annotations

import numpy as np
from fairseq.data import data_utils

from .multidomain_dataset import MultiDomainDataset


def pair_sizes(dataset) -> np.ndarray:
    """(N, 2) source and target lengths of a ``LanguagePairDataset`` (target 0 without targets)."""
    src = np.asarray(dataset.src_sizes, dtype=np.int64)
    tgt = dataset.tgt_sizes
    tgt = np.zeros_like(src) if tgt is None else np.asarray(tgt, dtype=np.int64)
    return np.stack([src, tgt], axis=1)


class MultiDomainTranslationDataset(MultiDomainDataset):
    def __init__(self, datasets, domain_indices, domain_names):
        super().__init__(datasets, domain_indices, domain_names)
        self.pair_sizes = np.concatenate([pair_sizes(d) for d in self.datasets])
        self._sizes = self.pair_sizes.max(axis=1)  # what batching counts per sample

    def size(self, index: int):
        return tuple(int(n) for n in self.pair_sizes[index])

    def filter_indices_by_size(self, indices, max_sizes):
        """Drop pairs longer than ``max_sizes`` (max source, max target) or an int; (kept, ignored)."""
        return data_utils.filter_paired_dataset_indices_by_size(
            self.pair_sizes[:, 0], self.pair_sizes[:, 1], np.asarray(indices), max_sizes
        )

    def collate_domain(self, entry: int, items) -> dict:
        """The base's batch with ``id`` the samples' indices in this dataset (domains one after the
        other: unique, as fairseq-generate prints them) and ``local_ids`` their ids within their
        domain, both in the batch's order (fairseq's pair collater sorts by source length)."""
        batch = super().collate_domain(entry, items)
        if batch:
            batch["local_ids"] = batch["id"].numpy().copy()
            batch["id"] = batch["id"] + int(self.offsets[entry])
        return batch

    def subset_of_domain(self, domain_index: int) -> MultiDomainTranslationDataset:
        entry = self.entry_for_domain(domain_index)
        return MultiDomainTranslationDataset(
            [self.datasets[entry]], [domain_index], [self.domain_names[entry]]
        )
