"""``multidomain_nas_loss --label-smoothing`` against fairseq's own
``label_smoothed_cross_entropy`` criterion on the same translation model and batch: the same
loss, the same unsmoothed nll_loss; without smoothing, the plain cross-entropy."""

from types import SimpleNamespace

import pytest
import torch
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
)

from mdnas_fairseq.criterions.multidomain_nas_loss import MultiDomainNASLoss
from tests.unit.test_translation_incremental import batch, build


def sample_of(d):
    src, prev, domain = batch(d, seed=11)
    target = torch.cat([prev[:, 1:], torch.full((3, 1), d.eos())], dim=1)
    target[0, -3:] = d.pad()  # a shorter target
    net_input = {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1),
                 "prev_output_tokens": prev, "domain": domain, "batch_domain": 0}  # fmt: skip
    ntokens = int(target.ne(d.pad()).sum())
    return {"net_input": net_input, "target": target, "ntokens": ntokens, "nsentences": 3}


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_label_smoothing_is_fairseqs(eps):
    model, d = build(["attention", "ffn_relu"] * 2)
    task = SimpleNamespace(target_dictionary=d, domain_names=["a", "b"])
    sample = sample_of(d)
    ours = MultiDomainNASLoss(task, label_smoothing=eps)
    theirs = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=eps)
    with torch.no_grad():
        loss, size, log = ours(model, sample)
        ref_loss, ref_size, ref_log = theirs(model, sample)
    assert size == ref_size == sample["ntokens"]
    torch.testing.assert_close(loss, ref_loss, atol=0, rtol=1e-6)
    nll = log["nll_loss"] if eps > 0 else log["loss"]
    torch.testing.assert_close(torch.as_tensor(nll), ref_log["nll_loss"], atol=0, rtol=1e-6)
    assert ("nll_loss" in log) == (eps > 0)
    if eps > 0:
        assert abs(float(loss) - float(nll)) > 1e-3  # the objective is the smoothed one
