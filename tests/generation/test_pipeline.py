"""TeaCache on the whole tiny-flux pipeline, loaded from disk like a hub model."""

import numpy as np
import pytest

from teacli import TeaCacheConfig, apply_teacache
from teacli.generation.runner import GenerationRequest, generate
from teacli.models.catalog import builtin_presets

STEPS = 8


def request(**overrides):
    return GenerationRequest.from_preset(
        builtin_presets()["tiny-flux"], "a red circle on a blue background", **({"steps": STEPS} | overrides)
    )


def config(thresh):
    return TeaCacheConfig(thresh=thresh, coefficients=builtin_presets()["tiny-flux"].coefficients)


def pixels(result):
    return np.asarray(result.output)


def test_threshold_zero_gives_the_unhooked_image(tiny_flux_pipe):
    baseline = pixels(generate(tiny_flux_pipe, request()))
    with apply_teacache(tiny_flux_pipe, config(0.0)) as handle:
        hooked = pixels(generate(tiny_flux_pipe, request()))
    assert np.array_equal(baseline, hooked)
    assert handle.stats.totals.cached == 0 and handle.stats.totals.calls == STEPS


def test_threshold_zero_with_true_cfg_matches_in_both_branches(tiny_flux_pipe):
    cfg = request(negative_prompt="a green square", true_cfg=2.0)
    baseline = pixels(generate(tiny_flux_pipe, cfg))
    with apply_teacache(tiny_flux_pipe, config(0.0)) as handle:
        hooked = pixels(generate(tiny_flux_pipe, cfg))
    assert np.array_equal(baseline, hooked)
    assert {branch for _, branch in handle.stats.branches()} == {"cond", "uncond"}


def test_first_and_last_steps_are_forced_without_being_told_the_step_count(tiny_flux_pipe):
    with apply_teacache(tiny_flux_pipe, config(1e6)) as handle:
        generate(tiny_flux_pipe, request())
    decisions = [str(r.decision) for r in handle.stats.records]
    assert decisions == ["forced"] + ["cached"] * (STEPS - 2) + ["forced"]
    assert [r.step for r in handle.stats.records] == list(range(STEPS))


def test_cfg_branches_keep_separate_states(tiny_flux_pipe):
    cfg = request(negative_prompt="a green square", true_cfg=2.0)
    with apply_teacache(tiny_flux_pipe, config(0.25)) as handle:
        generate(tiny_flux_pipe, cfg)
    for branch in ("cond", "uncond"):
        records = [r for r in handle.stats.records if r.branch == branch]
        assert [r.step for r in records] == list(range(STEPS))
        assert str(records[0].decision) == "forced" and str(records[-1].decision) == "forced"
        assert records[0].rel_l1 is None and all(r.rel_l1 is not None for r in records[1:])


def test_two_generations_in_one_process_give_identical_images(tiny_flux_pipe):
    with apply_teacache(tiny_flux_pipe, config(0.25)) as handle:
        first = pixels(generate(tiny_flux_pipe, request()))
        second = pixels(generate(tiny_flux_pipe, request()))
    assert np.array_equal(first, second)
    by_generation = {g: [str(r.decision) for r in handle.stats.records if r.generation == g] for g in (0, 1)}
    assert by_generation[0] == by_generation[1]
    assert by_generation[0].count("cached") > 0


def test_caching_skips_calls_and_stays_close_to_the_baseline(tiny_flux_pipe):
    from teacli.generation.measure import quality

    baseline = generate(tiny_flux_pipe, request(steps=28))
    with apply_teacache(tiny_flux_pipe, config(0.25)) as handle:
        cached = generate(tiny_flux_pipe, request(steps=28))
    assert handle.stats.totals.cached >= 5
    score = quality(cached.output, baseline.output)
    assert score.psnr > 30 and 0.9 < score.ssim < 1.0


def test_remove_restores_the_pipeline(tiny_flux_pipe):
    baseline = pixels(generate(tiny_flux_pipe, request()))
    handle = apply_teacache(tiny_flux_pipe, config(1e6))
    changed = pixels(generate(tiny_flux_pipe, request()))
    handle.remove()
    assert not np.array_equal(baseline, changed)
    assert np.array_equal(baseline, pixels(generate(tiny_flux_pipe, request())))
    assert "forward" not in vars(tiny_flux_pipe.transformer)


@pytest.mark.parametrize("steps", [2, 3])
def test_short_schedules_compute_first_and_last(tiny_flux_pipe, steps):
    with apply_teacache(tiny_flux_pipe, config(1e6)) as handle:
        generate(tiny_flux_pipe, request(steps=steps))
    decisions = [str(r.decision) for r in handle.stats.records]
    assert decisions[0] == "forced" and decisions[-1] == "forced" and len(decisions) == steps
