import math

import pytest
import torch

from teacli.engine.decision import Decision, decide, rel_l1, rescale

IDENTITY = [1.0, 0.0]  # poly(x) = x


def run(distances, thresh, coefficients=IDENTITY, forced_at=()):
    """Feed a scripted sequence of rel_l1 values through decide, carrying the accumulator."""
    accumulated, decisions = 0.0, []
    for index, distance in enumerate(distances):
        verdict = decide(
            distance=distance,
            accumulated=accumulated,
            coefficients=coefficients,
            thresh=thresh,
            forced=index in forced_at,
        )
        accumulated = verdict.carried
        decisions.append(verdict.decision)
    return "".join({Decision.COMPUTED: "C", Decision.CACHED: ".", Decision.FORCED: "F"}[d] for d in decisions)


def test_rel_l1_is_mean_abs_difference_over_mean_abs_previous():
    previous = torch.tensor([1.0, -2.0, 3.0, -4.0])
    current = previous + torch.tensor([0.5, 0.5, -0.5, 0.5])
    assert rel_l1(current, previous) == pytest.approx(0.5 / 2.5)


def test_rel_l1_computes_in_float32_for_half_inputs():
    previous = torch.full((4096,), 1.0, dtype=torch.bfloat16)
    assert rel_l1(previous + 0.0078125, previous) == pytest.approx(0.0078125)


def test_rescale_is_numpy_poly1d_order_and_clamped_at_zero():
    import numpy as np

    coefficients = [4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01]
    for x in (0.01, 0.1, 0.3):
        assert rescale(x, coefficients) == pytest.approx(max(np.poly1d(coefficients)(x), 0.0))
    assert rescale(0.5, [-1.0, 0.0]) == 0.0  # negative polynomial values never shrink the accumulator


def test_rescale_clamps_to_the_calibrated_range():
    assert rescale(10.0, IDENTITY, x_range=(0.0, 0.2)) == pytest.approx(0.2)
    assert rescale(0.001, IDENTITY, x_range=(0.05, 0.2)) == pytest.approx(0.05)
    assert rescale(0.1, IDENTITY, x_range=(0.05, 0.2)) == 0.1  # inside the range: untouched


def test_accumulates_until_threshold_then_computes_and_resets():
    # 0.1 per call, thresh 0.25: 0.1 cached, 0.2 cached, 0.3 computes and resets.
    assert run([None, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], thresh=0.25) == "F..C..C"


def test_threshold_zero_computes_every_call_even_with_a_negative_polynomial():
    assert run([None, 0.0, 0.1, 0.0001, 0.5], thresh=0.0, coefficients=[-5.0, 0.0]) == "FCCCC"
    assert run([None] + [1e-9] * 5, thresh=0.0) == "FCCCCC"


def test_forced_calls_compute_and_reset_the_accumulator():
    assert run([None, 0.1, 0.1, 0.1, 0.1, 0.1], thresh=0.25, forced_at={2}) == "F.F..C"


def test_a_large_change_computes_at_once():
    assert run([None, 0.01, 0.9, 0.01], thresh=0.25) == "F.C."


def test_negative_polynomial_does_not_let_the_accumulator_shrink():
    verdict = decide(distance=0.5, accumulated=0.2, coefficients=[-1.0, 0.0], thresh=0.3, forced=False)
    assert verdict.accumulated == pytest.approx(0.2) and verdict.rescaled == 0.0
    assert not math.isnan(verdict.accumulated)
