"""The alpha step's fp16 loss-scale factor: halved after an overflow, doubled after a window of
alpha steps without one, as fairseq's DynamicLossScaler treats the weight loss scale."""

import pytest
from fairseq.optim.dynamic_loss_scaler import DynamicLossScaler

from mdnas_fairseq.tasks.bilevel.precision import AlphaLossScale


def test_halves_on_overflow_and_grows_back_after_a_window():
    scale = AlphaLossScale()
    assert scale.factor == 1.0 and scale.scale(8.0) == 8.0
    assert scale.update(True, 8.0, window=3)  # overflow: halved
    assert scale.factor == 0.5 and scale.scale(8.0) == 4.0
    assert not scale.update(False, 8.0, window=3)
    assert not scale.update(False, 8.0, window=3)
    assert scale.factor == 0.5
    assert scale.update(False, 8.0, window=3)  # the third step without overflow: doubled
    assert scale.factor == 1.0 and scale.steps_since_rescale == 0
    for _ in range(3):
        scale.update(False, 8.0, window=3)
    assert scale.factor == 2.0  # grows on beyond the optimizer's scale (underflow of small grads)
    scale.update(False, 8.0, window=3)
    scale.update(True, 8.0, window=3)  # an overflow restarts the window
    assert scale.factor == 1.0 and scale.steps_since_rescale == 0
    scale.update(False, 8.0, window=3)
    scale.update(False, 8.0, window=3)
    assert scale.factor == 1.0


@pytest.mark.parametrize("window", [1, 2, 5])
def test_follows_fairseqs_dynamic_loss_scaler(window):
    # the same overflow pattern through fairseq's scaler (tolerance 0, as fairseq's fp16 optimizers)
    pattern = [True, False, False, True] + [False] * 11 + [True, True] + [False] * 7
    reference = DynamicLossScaler(init_scale=1.0, scale_window=window, min_loss_scale=1e-30)
    scale = AlphaLossScale()
    for overflow in pattern:
        if overflow:
            with pytest.raises(OverflowError):
                reference.check_overflow(float("inf"))
        else:
            reference.update()
        scale.update(overflow, 1.0, window)
        assert scale.factor == reference.loss_scale


def test_growth_is_bounded():
    scale = AlphaLossScale(factor=2.0**10)
    optimizer_scale = 2.0**14
    assert not scale.update(False, optimizer_scale, window=1)  # 2**14 * 2**10 * 2 > 2**24
    assert scale.factor == 2.0**10
    assert scale.update(False, 2.0**12, window=1)  # 2**12 * 2**10 * 2 = 2**23
    assert scale.factor == 2.0**11
    assert scale.update(True, optimizer_scale, window=1)  # halving is never bounded
    assert scale.factor == 2.0**10


def test_state_round_trip():
    scale = AlphaLossScale()
    for overflow in (True, False, False):
        scale.update(overflow, 4.0, window=5)
    state = scale.state_dict()
    assert state == {"factor": 0.5, "steps_since_rescale": 2}
    other = AlphaLossScale()
    other.load_state_dict(state)
    assert other.state_dict() == state
    for s in (scale, other):
        for _ in range(3):
            s.update(False, 4.0, window=5)
    assert other.factor == scale.factor == 1.0
