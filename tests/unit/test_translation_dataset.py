"""MultiDomainTranslationDataset (mdnas_fairseq/data/multidomain_translation.py): sentence pairs of
several domains, batched one domain at a time, sized and filtered by (source, target) length
as fairseq's translation task does. The expected values are counted by hand from the pairs
written here."""

import numpy as np
import torch
from fairseq.data import Dictionary, LanguagePairDataset

from mdnas_fairseq.data.multidomain_translation import MultiDomainTranslationDataset

# (source length, target length) of each pair, with </s>; two domains
LENGTHS = [[(3, 2), (6, 2), (2, 5)], [(4, 4), (2, 2)]]


def pairs(d, lengths):
    src = [torch.full((s,), 5, dtype=torch.long) for s, _ in lengths]
    tgt = [torch.full((t,), 6, dtype=torch.long) for _, t in lengths]
    return LanguagePairDataset(
        src, [s for s, _ in lengths], d, tgt, [t for _, t in lengths], d, shuffle=False
    )


def dataset():
    d = Dictionary()
    for w in ("a", "b", "c"):
        d.add_symbol(w)
    return MultiDomainTranslationDataset([pairs(d, ls) for ls in LENGTHS], [0, 1], ["x", "y"]), d


def test_sizes_and_filter_by_source_and_target_length():
    ds, _ = dataset()
    assert [ds.size(i) for i in range(len(ds))] == [(3, 2), (6, 2), (2, 5), (4, 4), (2, 2)]
    assert [ds.num_tokens(i) for i in range(len(ds))] == [3, 6, 5, 4, 2]
    kept, ignored = ds.filter_indices_by_size(np.arange(5), (4, 4))
    assert kept.tolist() == [0, 3, 4] and sorted(ignored) == [1, 2]  # source 6 > 4, target 5 > 4
    kept, ignored = ds.filter_indices_by_size(np.arange(5), 5)
    assert kept.tolist() == [0, 2, 3, 4] and list(ignored) == [1]


def test_batches_hold_one_domain_and_say_which():
    ds, d = dataset()
    batches = ds.batch_by_size(np.arange(5), max_sentences=2)
    assert sorted(int(i) for b in batches for i in b) == list(range(5))
    for b in batches:
        sample = ds.collater([ds[int(i)] for i in b])
        domain = 0 if int(b[0]) < 3 else 1
        assert sample["domain"] == domain and sample["net_input"]["batch_domain"] == domain
        assert sample["net_input"]["domain"].tolist() == [domain] * len(b)
        assert sample["net_input"]["prev_output_tokens"][:, 0].eq(d.eos()).all()
        rows = [int(i) for i in b]  # ids in the batch's order (sorted by source length)
        assert sorted(sample["id"].tolist()) == rows  # unique over the domains
        offset = 0 if domain == 0 else 3
        assert (sample["local_ids"] + offset).tolist() == sample["id"].tolist()
        lengths = sample["net_input"]["src_lengths"].tolist()
        assert lengths == [ds.size(i)[0] for i in sample["id"].tolist()]
    single = ds.subset_of_domain(1)
    assert isinstance(single, MultiDomainTranslationDataset) and len(single) == 2
    assert [single.size(i) for i in range(2)] == [(4, 4), (2, 2)]
