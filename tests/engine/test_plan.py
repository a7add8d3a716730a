"""Planned schedules: the pure planning (teacli.engine.plan), the hook running a plan, and the policy choice."""

import itertools
import math

import pytest
import torch
from toy import BareToyTransformer

from teacli import TeaCacheConfig, TeaCacheError, apply_teacache
from teacli.engine.decision import Decision
from teacli.engine.plan import Costs, Plan, PlanError, candidates, from_timeline, solve, uniform, with_forecast


def table(steps, cost):
    """A full cost table from cost(i, j) for j >= i + 2, None elsewhere."""
    return tuple(tuple(cost(i, j) if j >= i + 2 else None for j in range(steps)) for i in range(steps))


def worst_gap(costs, computed):
    return max((costs.gap(a, b, False) for a, b in zip(computed, computed[1:])), default=0.0)


# --- plans -------------------------------------------------------------------------------------------------------


def test_uniform_spreads_the_budget_and_keeps_first_and_last():
    plan = uniform(28, 6)
    assert plan.computed == (0, 5, 11, 16, 22, 27)
    assert plan.budget == 6 and plan.forecast == ()
    assert uniform(10, 10).computed == tuple(range(10))
    assert uniform(5, 2).timeline() == "C...C"


@pytest.mark.parametrize("budget", [1, 11, 2.5, True])
def test_a_budget_outside_the_schedule_is_refused(budget):
    with pytest.raises(PlanError):
        uniform(10, budget)


def test_a_plan_must_compute_first_and_last_and_forecast_only_after_a_second_computed_step():
    with pytest.raises(PlanError, match="first and last"):
        Plan(6, (0, 2, 4))
    with pytest.raises(PlanError, match="forecasts after"):
        Plan(6, (0, 3, 5), forecast=(0,))
    with pytest.raises(PlanError, match="forecasts after"):
        Plan(6, (0, 3, 5), forecast=(2,))
    with pytest.raises(PlanError, match="step indices"):
        Plan(6, (0, 7, 5))
    assert Plan(6, (5, 0, 3, 3), forecast=(3,)).computed == (0, 3, 5)


@pytest.mark.parametrize("timeline", ["C..CffC.C", "CC", "CCfC", "C.C.CffffC"])
def test_a_timeline_reads_back_as_the_same_plan(timeline):
    plan = from_timeline(timeline)
    assert plan.timeline() == timeline
    assert plan.steps == len(timeline) and plan.budget == timeline.count("C")


@pytest.mark.parametrize("timeline", ["", "C..X", "Cf.C", "CffC", ".CC", "C.f.C", "CC.", 7])
def test_a_malformed_timeline_is_refused(timeline):
    with pytest.raises(PlanError):
        from_timeline(timeline)


def test_solve_finds_the_least_worst_gap_of_every_path():
    # Costs that grow with the gap and are dearer early, as in a flow-matching schedule: brute force agrees.
    steps = 9
    costs = Costs(steps, table(steps, lambda i, j: (j - i) ** 2 * (3.0 if i < 3 else 1.0) + 0.01 * i))
    for budget in range(2, steps + 1):
        plan = solve(costs, budget, reach=0)
        assert plan.budget == budget and plan.computed[0] == 0 and plan.computed[-1] == steps - 1
        middles = itertools.combinations(range(1, steps - 1), budget - 2)
        best = min(worst_gap(costs, (0, *middle, steps - 1)) for middle in middles)
        assert worst_gap(costs, plan.computed) == pytest.approx(best)


def test_solve_forecasts_a_gap_only_where_it_was_measured_cheaper_and_the_slope_is_near():
    steps = 10
    reuse = table(steps, lambda i, j: float(j - i))
    forecast = table(steps, lambda i, j: 0.1 if j - i <= 3 else 100.0)
    costs = Costs(steps, reuse, forecast)
    plan = solve(costs, 6, reach=1)
    for start in plan.forecast:  # every forecast follows a computed step right before it
        assert start - 1 in plan.computed
        end = plan.computed[plan.computed.index(start) + 1]
        assert end - start <= 3
    assert plan.forecast, "cheap forecasts should be taken"
    assert solve(costs, 6, reach=0).forecast == ()


def test_solve_says_when_the_measured_gaps_cannot_hold_the_budget():
    steps = 10
    costs = Costs(steps, table(steps, lambda i, j: 1.0 if j - i <= 2 else None))
    with pytest.raises(PlanError, match="no plan of 3 computed steps"):
        solve(costs, 3)
    assert [p.timeline() for p in candidates(costs, steps, 3)] == [uniform(steps, 3).timeline()]


def test_with_forecast_marks_short_gaps_after_the_second_computed_step():
    plan = with_forecast(from_timeline("C..C.C...C.C"), 1)
    assert plan.timeline() == "C..CfC...CfC"
    assert with_forecast(from_timeline("C..C.C...C.C"), 3).timeline() == "C..CfCfffCfC"


def test_candidates_are_distinct_and_include_the_uniform_stride():
    steps = 12
    costs = Costs(steps, table(steps, lambda i, j: float(j - i) ** 2), table(steps, lambda i, j: float(j - i)))
    plans = candidates(costs, steps, 5)
    timelines = [p.timeline() for p in plans]
    assert len(set(timelines)) == len(timelines)
    assert uniform(steps, 5).timeline() in timelines
    assert all(p.budget == 5 for p in plans)


def test_costs_round_trip_through_the_presets_banded_form():
    steps = 7
    reuse = table(steps, lambda i, j: 0.001 * (j - i) if j - i <= 4 else None)
    costs = Costs(steps, reuse, table(steps, lambda i, j: 0.002 if j - i == 2 and i > 0 else None))
    data = costs.to_dict()
    assert data["reuse"][0] == [0.002, 0.003, 0.004]
    again = Costs.from_dict(steps, data)
    assert again.reuse == costs.reuse
    assert again.gap(1, 3, True) == 0.002 and again.gap(1, 4, True) is None
    assert again.max_gap == 3


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "'reuse' table"),
        ({"reuse": [[1.0]], "other": []}, "unknown field"),
        ({"reuse": [[-1.0]]}, "finite numbers"),
        ({"reuse": [[math.nan]]}, "finite numbers"),
        ({"reuse": [[1.0] * 9]}, "row 0"),
        ({"reuse": "x"}, "list of"),
    ],
)
def test_malformed_costs_are_refused(data, message):
    with pytest.raises(PlanError, match=message):
        Costs.from_dict(7, data)


# --- the hook running a plan -------------------------------------------------------------------------------------

MARKS = {Decision.COMPUTED: "C", Decision.CACHED: ".", Decision.FORCED: "F"}


def drive(model, steps, timesteps=None, seed=0):
    """One call per step with fresh random streams; returns (image, text, outputs) per call."""
    generator = torch.Generator().manual_seed(seed)
    calls = []
    for step in range(steps):
        image, text = torch.randn(2, 3, generator=generator), torch.randn(5, generator=generator)
        modulated = torch.full((4,), 1.0 + step)
        timestep = None if timesteps is None else timesteps[step]
        calls.append((image, text, model(image, text, modulated, timestep=timestep)))
    return calls


@torch.no_grad()
def test_the_hook_computes_exactly_the_plans_steps_and_measures_nothing():
    model = BareToyTransformer()
    plan = from_timeline("C..C.C..C")
    handle = apply_teacache(model, TeaCacheConfig(plan=plan, num_inference_steps=9))
    drive(model, 9)
    records = handle.stats.records
    assert "".join(MARKS[r.decision] for r in records) == "C..C.C..C"
    assert model.block_runs == 4
    assert all(r.rel_l1 is None for r in records)


@torch.no_grad()
def test_a_reused_call_adds_the_last_computed_residual():
    model = BareToyTransformer()
    apply_teacache(model, TeaCacheConfig(plan=from_timeline("C..C"), num_inference_steps=4))
    calls = drive(model, 4)
    image0, text0, (out_image0, out_text0) = calls[0]
    for image, text, (out_image, out_text) in calls[1:3]:
        assert torch.equal(out_image, image + (out_image0 - image0))
        assert torch.equal(out_text, text + (out_text0 - text0))


@torch.no_grad()
def test_a_forecast_call_extrapolates_the_residual_linearly_in_the_timestep():
    model = BareToyTransformer()
    timesteps = [1.0, 0.9, 0.7, 0.6, 0.3, 0.0]
    apply_teacache(model, TeaCacheConfig(plan=from_timeline("CCfffC"), num_inference_steps=6))
    calls = drive(model, 6, timesteps=timesteps)
    (image_a, text_a, (out_a, out_text_a)), (image_b, text_b, (out_b, out_text_b)) = calls[:2]
    residual_a, residual_b = out_a - image_a, out_b - image_b
    text_residual_a, text_residual_b = out_text_a - text_a, out_text_b - text_b
    for step in (2, 3, 4):
        image, text, (out_image, out_text) = calls[step]
        span = (timesteps[step] - timesteps[1]) / (timesteps[1] - timesteps[0])
        assert torch.allclose(out_image, image + residual_b + span * (residual_b - residual_a), atol=1e-6)
        assert torch.allclose(out_text, text + text_residual_b + span * (text_residual_b - text_residual_a), atol=1e-6)
    assert model.block_runs == 3


@torch.no_grad()
def test_without_timesteps_a_forecast_uses_the_step_index():
    model = BareToyTransformer()
    apply_teacache(model, TeaCacheConfig(plan=from_timeline("C.CffC"), num_inference_steps=6))
    calls = drive(model, 6)
    residual_a = calls[0][2][0] - calls[0][0]
    residual_b = calls[2][2][0] - calls[2][0]
    image, _, (out_image, _) = calls[4]
    assert torch.allclose(out_image, image + residual_b + (4 - 2) / (2 - 0) * (residual_b - residual_a), atol=1e-6)


def test_a_plan_for_another_step_count_is_refused_on_the_first_call():
    model = BareToyTransformer()
    apply_teacache(model, TeaCacheConfig(plan=uniform(8, 4), num_inference_steps=6))
    with pytest.raises(TeaCacheError, match="made for 8 steps but this run has 6"):
        drive(model, 1)


def test_a_config_with_a_plan_needs_no_coefficients_and_checks_the_plan():
    assert TeaCacheConfig(plan=uniform(8, 4)).coefficients == []
    from teacli.engine.apply import apply_teacache as apply_as_given  # the engine's: no preset fills it in

    with pytest.raises(TeaCacheError, match="coefficients are required"):
        apply_as_given(BareToyTransformer(), TeaCacheConfig())
    with pytest.raises(TeaCacheError, match="teacli.engine.plan.Plan"):
        TeaCacheConfig(plan="C..C")
