"""Training epochs whose batches are drawn by domain: every batch holds one domain d ~ Categorical(p).

An epoch has as many batches as the trained domains have together (every domain, except the old,
frozen domains of an extension).

fairseq freezes an epoch's batch list (so it can be sharded over workers and resumed mid-epoch),
so an epoch's draws use p as it stands when the epoch's batches are laid out; the p used for
every epoch is kept in the task state, so a resumed run lays out the same batches.
"""

import numpy as np
from fairseq.data import data_utils, iterators

from ...data import MultiDomainDataset, draw_domain_batches


def domain_drawn_iterator(
    host,
    dataset: MultiDomainDataset,
    epoch_probs,
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
    """Like fairseq's ``get_batch_iterator``; ``epoch_probs(epoch)`` gives p for an epoch's draws."""
    dataset.set_epoch(epoch)

    def make_batches(ds, ep):
        with data_utils.numpy_seed(seed + ep):
            indices = ds.ordered_indices()
        if max_positions is not None:
            indices = host.filter_indices_by_size(indices, ds, max_positions, ignore_invalid_inputs)
        per_entry = ds.batches_per_entry(
            indices, max_tokens, max_sentences, required_batch_size_multiple
        )
        trained = host.search.trained_domains  # an extension: the old domains are not trained
        if trained is not None:
            per_entry = [b if d in trained else [] for b, d in zip(per_entry, ds.domain_indices)]
        probs = epoch_probs(ep)
        entry_probs = [probs[d] for d in ds.domain_indices]
        rng = np.random.RandomState((seed * 100003 + ep) % (2**32))
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
