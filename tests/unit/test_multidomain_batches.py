"""Every sentence of every domain lands in exactly one batch (fairseq 0.12 drops a remainder).

fairseq's ``data_utils.batch_by_size`` drops a last batch whose size is not a multiple of
``required_batch_size_multiple`` (default 8 in fairseq-train and fairseq-eval-lm), so a test set
of 150 sentences per domain was scored on 144. The reference here is the set of indices itself.
"""

import numpy as np
import pytest

from mdnas_fairseq.data.multidomain_dataset import MultiDomainDataset


class Sized:
    def __init__(self, sizes):
        self.sizes = np.asarray(sizes, dtype=np.int64)

    def __len__(self):
        return len(self.sizes)


@pytest.mark.parametrize("multiple", [1, 8])
@pytest.mark.parametrize("max_sentences,max_tokens", [(4, None), (None, 40), (3, 25)])
def test_every_index_in_exactly_one_batch(multiple, max_sentences, max_tokens):
    rng = np.random.default_rng(0)
    counts = [150, 13, 7]  # none a multiple of 8
    ds = MultiDomainDataset(
        [Sized(rng.integers(1, 9, size=n)) for n in counts], [0, 1, 2], ["en", "de", "fr"]
    )
    indices = ds.ordered_indices()
    batches = ds.batch_by_size(
        indices,
        max_tokens=max_tokens,
        max_sentences=max_sentences,
        required_batch_size_multiple=multiple,
    )
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(ds)))
    for b in batches:  # one domain per batch, limits kept
        assert len(set(ds.entry_of(np.asarray(b)).tolist())) == 1
        if max_sentences is not None:
            assert len(b) <= max_sentences
        if max_tokens is not None:
            assert len(b) * ds.sizes[np.asarray(b)].max() <= max_tokens
