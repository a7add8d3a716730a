"""The calibration library: the polynomial fit, the (x, y) pairs the hook records, and the warnings."""

import math

import numpy as np
import pytest
import torch
from toy import IDENTITY, BareToyTransformer, drive, pattern

from teacli import TeaCacheConfig, apply_teacache
from teacli.batch.prompts import BUILTIN_PROMPTS, PromptsError, read_prompts
from teacli.calibrate.coefficients import (
    CalibrationError,
    CalibrationResult,
    CalibrationSettings,
    collect_pairs,
    fit_pairs,
    fit_polynomial,
)
from teacli.engine.decision import rel_l1

# TeaCache4FLUX's published coefficients, as a realistic "true" curve.
FLUX = [4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01]


def synthetic(coefficients, n=3000, noise=0.0, seed=0, low=0.02, high=0.35):
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, n)
    y = np.polyval(coefficients, x) + rng.normal(0.0, noise, n)
    return x, y


def test_fit_recovers_a_known_polynomial_from_noisy_data():
    x, y = synthetic(FLUX, noise=1e-4)
    fit = fit_polynomial(x, y, order=4)
    assert fit.order == 4 and fit.pairs == 3000
    np.testing.assert_allclose(fit.coefficients, FLUX, rtol=0.05, atol=0.05)
    # The curve itself is recovered far more tightly than the individual coefficients.
    grid = np.linspace(0.02, 0.35, 50)
    np.testing.assert_allclose(fit.predict(grid), np.polyval(FLUX, grid), atol=5e-5)
    assert fit.r2 > 0.999
    assert fit.x_range == pytest.approx((x.min(), x.max()))
    assert fit.y_range == pytest.approx((y.min(), y.max()))
    assert fit.correlation > 0.8  # the FLUX curve bends, so x and y are not perfectly linear


@pytest.mark.parametrize("order,coefficients", [(1, [0.8, 0.01]), (2, [3.0, 0.5, 0.02]), (3, [-20.0, 9.0, 0.3, 0.01])])
def test_fit_recovers_each_order_exactly_without_noise(order, coefficients):
    x, y = synthetic(coefficients, n=200)
    fit = fit_polynomial(x, y, order=order)
    np.testing.assert_allclose(fit.coefficients, coefficients, rtol=1e-6, atol=1e-8)
    assert fit.r2 == pytest.approx(1.0)


def test_noise_lowers_r2_and_correlation():
    clean = fit_polynomial(*synthetic(FLUX, noise=1e-4), order=4)
    noisy = fit_polynomial(*synthetic(FLUX, noise=0.2), order=4)
    assert noisy.r2 < 0.5 < clean.r2
    assert noisy.correlation < clean.correlation


@pytest.mark.parametrize(
    "x,y,order,message",
    [
        ([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], 4, "at least 5"),
        ([0.1] * 10, list(range(10)), 2, "does not change"),
        ([0.1, 0.2, math.nan, 0.4], [0.1, 0.2, 0.3, 0.4], 1, "NaN"),
        ([0.1, 0.2], [0.1, 0.2], 0, "between 1 and 6"),
        ([0.1, 0.2], [0.1, 0.2], 7, "between 1 and 6"),
    ],
)
def test_fit_refuses_what_cannot_be_fitted(x, y, order, message):
    with pytest.raises(CalibrationError, match=message):
        fit_polynomial(x, y, order=order)


@torch.no_grad()
def test_the_hook_records_x_and_y_for_every_consecutive_pair_of_computed_calls():
    model = BareToyTransformer()
    config = TeaCacheConfig(thresh=0.0, coefficients=IDENTITY, record_output_change=True)
    handle = apply_teacache(model, config)
    distances = [0.05, 0.1, 0.2, 0.02]
    outputs = drive(model, distances)
    records = handle.stats.records
    assert [r.rel_l1 for r in records[1:]] == pytest.approx(distances, rel=1e-5)
    assert records[0].output_rel_l1 is None  # no previous call
    for record, (_, _, (previous_image, _)), (_, _, (image, _)) in zip(records[1:], outputs, outputs[1:]):
        # y is the block output's change (the image stream), measured exactly as rel_l1 measures x.
        assert record.output_rel_l1 == pytest.approx(rel_l1(image, previous_image))
    pairs = collect_pairs(handle.stats)
    ((key, (xs, ys)),) = pairs.items()
    assert key == ("transformer", "default") and len(xs) == len(ys) == 4


@torch.no_grad()
def test_pairs_never_span_a_cached_call():
    model = BareToyTransformer()
    config = TeaCacheConfig(thresh=0.25, coefficients=IDENTITY, record_output_change=True)
    handle = apply_teacache(model, config)
    drive(model, [0.1, 0.5, 0.5])
    records = handle.stats.records
    assert pattern(records) == "F.CC"
    # The first computed call follows a cached one: no pair; the next follows a computed one: a pair.
    assert [r.output_rel_l1 is not None for r in records] == [False, False, False, True]


def test_without_record_output_change_nothing_is_recorded():
    model = BareToyTransformer()
    handle = apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=IDENTITY))
    with torch.no_grad():
        drive(model, [0.1, 0.2])
    assert all(r.output_rel_l1 is None for r in handle.stats.records)
    assert collect_pairs(handle.stats) == {}


def result_from(pairs, order=4):
    settings = CalibrationSettings(prompts=3, steps=10, seed=0, order=order)
    return CalibrationResult(settings, fit_pairs(pairs, settings), pairs)


def as_pairs(x, y, branch="cond", module="transformer"):
    return {(module, branch): (list(x), list(y))}


def test_good_data_gives_no_warning():
    assert result_from(as_pairs(*synthetic(FLUX, noise=1e-3))).warnings() == []


def test_each_data_statistics_warning():
    few = result_from(as_pairs(*synthetic(FLUX, n=200, noise=1e-3))).warnings()
    assert len(few) == 1 and "only 200 pairs" in few[0]

    x, y = synthetic([2.0, 0.0], noise=1e-6, low=1e-5, high=5e-4)
    tiny = result_from(as_pairs(x, y), order=1).warnings()
    assert len(tiny) == 1 and "barely moves" in tiny[0]

    rng = np.random.default_rng(1)
    uncorrelated = result_from(as_pairs(rng.uniform(0.02, 0.3, 2000), rng.uniform(0.02, 0.3, 2000))).warnings()
    assert any("not correlated" in w for w in uncorrelated)

    falling = result_from(as_pairs(*synthetic([-1.0, 0.5], noise=1e-4))).warnings()
    assert len(falling) == 1 and "falls as x rises" in falling[0]

    x, y = synthetic([1e9, 0.0, 0.0, 0.0, 0.01], noise=1e-6, low=0.0, high=0.01)
    huge = result_from(as_pairs(x, y)).warnings()
    assert any("numerically unstable" in w for w in huge)


def test_branches_are_pooled_per_denoiser_and_fitted_apart_where_they_differ():
    same = {**as_pairs(*synthetic(FLUX, seed=1, noise=1e-4)), **as_pairs(*synthetic(FLUX, seed=2), branch="uncond")}
    result = result_from(same)
    fitted = result.fits["transformer"]
    assert fitted.pooled.pairs == 6000 and set(fitted.branches) == {"cond", "uncond"}
    assert result.warnings() == []

    other = [0.0, 0.0, 0.0, 3.0, 0.0]  # uncond's output moves three times as much
    differ = {**as_pairs(*synthetic(FLUX, seed=1)), **as_pairs(*synthetic(other, seed=2), branch="uncond")}
    warnings = result_from(differ).warnings()
    assert any("transformer/" in w and "per-branch fits" in w for w in warnings)


def test_each_expert_gets_its_own_fit_and_the_preset_its_own_range():
    from teacli.models.catalog import builtin_presets

    pairs = {
        **as_pairs(*synthetic(FLUX, seed=1)),
        **as_pairs(*synthetic([0.0, 0.0, 0.0, 2.0, 0.01], seed=2, low=0.1, high=0.2), module="transformer_2"),
    }
    result = result_from(pairs)
    preset = result.preset(builtin_presets()["tiny-wan22"])
    expert = preset.experts["transformer_2"]
    np.testing.assert_allclose(expert.coefficients, [0.0, 0.0, 0.0, 2.0, 0.01], atol=1e-6)
    assert expert.coefficients_source == "calibrated" and expert.rel_l1_range == pytest.approx((0.1, 0.2), abs=1e-3)
    assert preset.rel_l1_range == result.fits["transformer"].pooled.x_range
    assert preset.calibration["experts"]["transformer_2"]["pairs"] == 3000


def test_no_pairs_is_an_error_that_says_why():
    with pytest.raises(CalibrationError, match="no \\(x, y\\) pairs"):
        result_from({})


def test_builtin_prompts_are_many_and_distinct():
    assert len(BUILTIN_PROMPTS) >= 70
    assert len(set(BUILTIN_PROMPTS)) == len(BUILTIN_PROMPTS)
    assert any('"' in prompt for prompt in BUILTIN_PROMPTS)  # text rendering is covered


def test_read_prompts_skips_blanks_and_comments(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# my prompts\n\na cat\n  a dog  \n#a commented one\n", encoding="utf-8")
    assert read_prompts(path) == ["a cat", "a dog"]


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "does not exist"),
        ("", "holds no prompts"),
        ("# only a comment\n\n", "holds no prompts"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_read_prompts_errors(tmp_path, content, message):
    path = tmp_path / "prompts.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(PromptsError, match=message):
        read_prompts(path)


def test_a_poorly_conditioned_fit_is_flagged():
    # Two distinct x values cannot pin down a quartic: numpy warns, the statistics say so.
    x = [0.1, 0.2] * 600
    y = [0.05 + 0.001 * (i % 7) for i in range(1200)]
    result = result_from(as_pairs(x, y))
    assert not result.fits["transformer"].pooled.well_conditioned
    assert any("poorly conditioned" in w for w in result.warnings())
    assert fit_polynomial(*synthetic(FLUX), order=4).well_conditioned


@torch.no_grad()
def test_the_hook_clamps_rel_l1_to_the_calibrated_range_and_leaves_it_alone_inside():
    model = BareToyTransformer()
    # A threshold no call reaches, so the accumulator shows every rescaled distance.
    config = TeaCacheConfig(thresh=100.0, coefficients=IDENTITY, rel_l1_range=(0.05, 0.2))
    handle = apply_teacache(model, config)
    drive(model, [0.01, 0.1, 0.5])  # below, inside, above the range
    accumulated = [r.accumulated for r in handle.stats.records[1:]]
    assert accumulated == pytest.approx([0.05, 0.05 + 0.1, 0.05 + 0.1 + 0.2], rel=1e-5)
    assert [r.rel_l1 for r in handle.stats.records[1:]] == pytest.approx([0.01, 0.1, 0.5], rel=1e-5)  # as measured


def test_a_calibrated_preset_hands_its_range_to_every_denoiser_config():
    from teacli.generation.caching import teacache_configs
    from teacli.models.catalog import builtin_presets

    pairs = {
        **as_pairs(*synthetic(FLUX, seed=1, low=0.03, high=0.1)),
        **as_pairs(*synthetic(FLUX, seed=2, low=0.1, high=0.3), module="transformer_2"),
    }
    configs = teacache_configs(result_from(pairs).preset(builtin_presets()["tiny-wan22"]))
    assert configs["transformer"].rel_l1_range == pytest.approx((0.03, 0.1), abs=1e-3)
    assert configs["transformer_2"].rel_l1_range == pytest.approx((0.1, 0.3), abs=1e-3)
    assert configs["transformer"].coefficients_source == configs["transformer_2"].coefficients_source == "calibrated"
