"""Decisiveness statistics (mdnas_fairseq.search.decisiveness) against hand computations."""

import math

import pytest
import torch

from mdnas_fairseq.search import darts_rnn_space, decisiveness, edge_entropy, edge_margin

SPACE = darts_rnn_space(2)  # 3 edges; ops none, tanh, relu, sigmoid, identity
#                         none  tanh  relu  sigm  iden
PROBS = torch.tensor(
    [
        [
            [0.20, 0.20, 0.20, 0.20, 0.20],  # uniform: entropy log 5, margin 0
            [0.00, 1.00, 0.00, 0.00, 0.00],  # one-hot: entropy 0, margin 1
            [0.60, 0.10, 0.25, 0.05, 0.00],
        ],  # none largest: margin over the others 0.25 - 0.10
        [
            [0.50, 0.50, 0.00, 0.00, 0.00],  # entropy log 2, margin 0.5
            [0.25, 0.25, 0.25, 0.25, 0.00],  # entropy log 4, margin 0
            [0.00, 0.40, 0.30, 0.20, 0.10],
        ],  # margin 0.1
    ],
    dtype=torch.float64,
)


def h(*p):
    return -sum(x * math.log(x) for x in p if x > 0)


def test_entropy_and_margin_by_hand():
    entropy = edge_entropy(PROBS)
    margin = edge_margin(PROBS, SPACE)
    assert entropy.shape == margin.shape == (2,)
    assert entropy[0].item() == pytest.approx((math.log(5) + 0 + h(0.6, 0.1, 0.25, 0.05)) / 3)
    assert entropy[1].item() == pytest.approx(
        (math.log(2) + math.log(4) + h(0.4, 0.3, 0.2, 0.1)) / 3
    )
    assert margin[0].item() == pytest.approx((0 + 1 + 0.15) / 3)
    assert margin[1].item() == pytest.approx((0.5 + 0 + 0.1) / 3)
    # one domain, and raw alpha through the softmax give the same numbers
    assert edge_entropy(PROBS[1]).item() == pytest.approx(entropy[1].item())
    alpha = torch.log(PROBS[1].clamp_min(1e-300)) + 3.0  # a shift per edge leaves the softmax alone
    ent, mar = decisiveness(alpha, SPACE, logits=True)
    assert ent.item() == pytest.approx(entropy[1].item()) and mar.item() == pytest.approx(
        margin[1].item()
    )


def test_margin_rejects_a_mismatched_space():
    with pytest.raises(ValueError, match="4 operations"):
        edge_margin(PROBS[..., :4], SPACE)


def test_statistics_and_penalty_need_no_values_on_the_host():
    """On the meta device any .item() / .tolist() / bool(tensor) raises: the statistics the trainer
    logs and the penalty it adds must be plain tensor programs (no host sync on a GPU)."""
    from mdnas_fairseq.cells.conv import DartsConvClassifier
    from mdnas_fairseq.search import ParamPenalty

    table = DartsConvClassifier(["a", "b"], channels=4, num_nodes=3).param_table()
    alpha = torch.empty(2, table.space.num_edges, table.space.num_ops, device="meta")
    entropy, margin = decisiveness(alpha, table.space, logits=True)
    penalty = ParamPenalty(table)(torch.softmax(alpha, -1))
    assert [t.shape for t in (entropy, margin, penalty)] == [(2,)] * 3
    assert all(t.device.type == "meta" for t in (entropy, margin, penalty))
    with pytest.raises(RuntimeError):
        float(entropy[0])  # the check is real: reading a value on meta fails
