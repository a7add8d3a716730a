"""Which policy a run uses (--thresh, --budget, --policy), plans in presets, calibrate --plan, and the CLI."""

import json
from dataclasses import replace

import pytest
import torch
import yaml

from teacli.engine.plan import Costs, from_timeline
from teacli.generation.policy import PLANNED, RULE, UNIFORM, PolicyError, choose_policy, parse_budget
from teacli.models.catalog import PresetError, builtin_presets, parse_preset, preset_to_dict

PLANS = {8: {2: "C......C", 3: "C...C..C", 4: "C.C..CfC", 5: "C.C.C.CC"}}


@pytest.fixture
def planned_preset():
    return replace(builtin_presets()["tiny-flux"], plans=PLANS, budget=4, source="")


def write_preset(preset, path):
    path.write_text(yaml.safe_dump(preset_to_dict(preset), sort_keys=False))
    return path


def test_a_threshold_asks_for_teacaches_own_rule(planned_preset):
    policy = choose_policy(planned_preset, 8, thresh=0.3)
    assert policy.name == RULE and policy.thresh == 0.3 and policy.plan is None
    assert policy.label == "teacache@0.3"
    assert choose_policy(planned_preset, 8, policy="teacache").thresh == planned_preset.thresh


def test_by_default_a_preset_runs_its_plan_at_its_budget_where_it_has_one(planned_preset):
    policy = choose_policy(planned_preset, 8)
    assert policy.name == PLANNED and policy.plan.timeline() == "C.C..CfC" and policy.budget == 4
    assert "calibrate --plan" in policy.source
    # Another step count has no plan: TeaCache's rule at the preset's threshold.
    assert choose_policy(planned_preset, 12).name == RULE
    assert choose_policy(replace(planned_preset, budget=None), 8).name == RULE


def test_a_budget_runs_the_calibrated_plan_else_the_uniform_stride(planned_preset):
    assert choose_policy(planned_preset, 8, budget="3").plan.timeline() == "C...C..C"
    uniform = choose_policy(planned_preset, 8, budget="6")
    assert uniform.name == UNIFORM and uniform.plan.computed == (0, 1, 3, 4, 6, 7)
    assert choose_policy(planned_preset, 8, budget="2", policy="uniform").name == UNIFORM
    with pytest.raises(PolicyError, match="no calibrated plan for 6 of 8 steps"):
        choose_policy(planned_preset, 8, budget="6", policy="plan")


@pytest.mark.parametrize(
    "asked, message",
    [
        (dict(thresh=0.2, budget="4"), "not both"),
        (dict(policy="teacache", budget="4"), "decides by threshold"),
        (dict(policy="plan", thresh=0.2), "drop --thresh"),
        (dict(policy="fastest"), "not one of"),
        (dict(budget="9"), "does not fit a 8-step schedule"),
        (dict(budget="many"), "neither a number"),
        (dict(budget="0.5x"), "neither a number"),
    ],
)
def test_contradictions_and_impossible_budgets_are_refused(planned_preset, asked, message):
    with pytest.raises(PolicyError, match=message):
        choose_policy(planned_preset, 8, **asked)


def test_a_speedup_budget_rounds_to_steps():
    assert parse_budget("4x", 28) == 7
    assert parse_budget(" 2.8X ", 28) == 10
    assert parse_budget("100x", 28) == 2
    assert parse_budget(12, 28) == 12


def test_plans_read_back_from_a_preset_file(planned_preset):
    data = yaml.safe_load(yaml.safe_dump(preset_to_dict(planned_preset)))
    assert replace(parse_preset(data, "x.yaml"), source="") == planned_preset


@pytest.mark.parametrize(
    "plans, message",
    [
        ("C..C", "expected a mapping"),
        ({"eight": {2: "C......C"}}, "step count"),
        ({8: {2: "C..C"}}, "not 8 with 2"),
        ({8: {3: "C......C"}}, "not 8 with 3"),
        ({8: {2: "C..X...C"}}, "timeline"),
        ({8: ["C......C"]}, "mapping of computed steps"),
    ],
)
def test_a_preset_with_a_malformed_plan_is_refused_naming_the_field(planned_preset, plans, message):
    data = preset_to_dict(planned_preset)
    data["plans"] = plans
    with pytest.raises(PresetError, match=message) as caught:
        parse_preset(data, "bad.yaml")
    assert "plans" in str(caught.value)


def test_a_preset_budget_below_two_is_refused(planned_preset):
    data = preset_to_dict(planned_preset)
    data["budget"] = 1
    with pytest.raises(PresetError, match="budget"):
        parse_preset(data, "bad.yaml")


# --- calibration on a real pipeline ----------------------------------------------------------------------------


@torch.no_grad()
def test_replayed_steps_give_the_same_pictures_as_computing_them(tiny_flux_pipe):
    from teacli.calibrate.plans import GapRun, _pictures, _Replay, _replaying
    from teacli.engine.apply import apply_teacache
    from teacli.generation.caching import teacache_configs
    from teacli.generation.runner import GenerationRequest
    from teacli.models.catalog import builtin_presets

    preset = builtin_presets()["tiny-flux"]
    requests = [GenerationRequest.from_preset(preset, text, steps=6, seed=i) for i, text in enumerate(["a", "b"])]
    replay = _Replay()
    replay.start(recording=True)
    with _replaying(tiny_flux_pipe, replay):
        reference = _pictures(tiny_flux_pipe, requests)
    assert len(replay.recorded) == 6  # one call per step: tiny-flux has no true CFG here
    for run in (GapRun(2, 5, False), GapRun(2, 4, True)):
        handle = apply_teacache(tiny_flux_pipe, teacache_configs(preset, plan=run.plan(6)))
        try:
            direct = _pictures(tiny_flux_pipe, requests)
            replay.start(replay_calls=run.replayed_steps)
            with _replaying(tiny_flux_pipe, replay):
                replayed = _pictures(tiny_flux_pipe, requests)
        finally:
            handle.remove()
        assert torch.allclose(direct, replayed, atol=1e-6)
        assert not torch.equal(direct, reference)  # the gap changed the picture, so the check above means something


def test_calibration_measures_every_gap_and_keeps_the_best_candidate(tiny_flux_pipe):
    from teacli.calibrate.plans import calibration_calls, gap_runs, run_plan_calibration
    from teacli.engine.plan import candidates
    from teacli.generation.caching import teacache_configs
    from teacli.generation.runner import GenerationRequest
    from teacli.models.catalog import builtin_presets

    preset = builtin_presets()["tiny-flux"]
    requests = [GenerationRequest.from_preset(preset, t, steps=7, seed=i) for i, t in enumerate(["x", "y", "z"])]
    made = []
    result = run_plan_calibration(
        tiny_flux_pipe,
        requests,
        lambda plan: teacache_configs(preset, plan=plan),
        max_gap=3,
        forecast_gap=2,
        budgets=[3, 4, 5],
        batch=2,
        on_run=lambda: made.append(1),
    )
    runs = gap_runs(7, 3, 2)
    assert {(r.start, r.end) for r in runs if not r.forecast} == {
        (i, j) for i in range(7) for j in range(i + 2, 7) if j - i <= 4
    }
    assert all(r.start >= 1 and r.end - r.start <= 3 for r in runs if r.forecast)
    tried = sum(len(candidates(None, 7, b)) for b in (3, 4, 5))
    assert len(made) >= 2 * (1 + len(runs)) + 2 * (1 + tried)
    assert sorted(result.chosen) == [3, 4, 5]
    for budget, chosen in result.chosen.items():
        assert chosen.plan.budget == budget and chosen.plan.steps == 7 and chosen.error >= 0
    assert result.calls > calibration_calls(7, 3, 2)
    planned = result.apply(replace(preset, defaults=replace(preset.defaults, steps=7)))
    assert set(planned.plans[7]) == {3, 4, 5} and planned.budget in (3, 4, 5)
    assert planned.calibration["plans"][7]["captions"] == 3


# --- the command line ------------------------------------------------------------------------------------------


def test_generate_runs_a_budget_and_records_the_policy(runner, planned_preset, tmp_path):
    from teacli.cli import app
    from teacli.generation.media import read_metadata

    preset_file = write_preset(planned_preset, tmp_path / "planned.yaml")
    out = tmp_path / "a.png"
    result = runner.invoke(
        app, ["generate", "a cat", "--model", str(preset_file), "--steps", "8", "--budget", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "3 of 8 steps computed" in result.output
    metadata = read_metadata(out)
    assert metadata["policy"] == PLANNED and metadata["budget"] == 3 and metadata["plan"] == "C...C..C"
    assert metadata["thresh"] is None and metadata["computed"] == 3


def test_generate_json_report_names_the_policy(runner, planned_preset, tmp_path):
    from teacli.cli import app

    preset_file = write_preset(planned_preset, tmp_path / "planned.yaml")
    args = ["generate", "a cat", "--model", str(preset_file), "--steps", "8", "--json", "--out", "b.png"]
    result = runner.invoke(app, [*args, "--budget", "8x"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["policy"] == PLANNED and report["budget"] == 2 and report["totals"]["computed"] == 2
    result = runner.invoke(app, [*args[:-2], "--out", "c.png", "--policy", "teacache", "--thresh", "0"])
    assert json.loads(result.stdout)["policy"] == RULE


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--thresh", "0.2", "--budget", "4"], "not both"),
        (["--budget", "lots"], "--budget lots is neither"),
        (["--policy", "best"], "--policy best is not one of"),
        (["--budget", "7", "--policy", "plan"], "no calibrated plan for 7 of 8 steps"),
        (["--budget", "3", "--start", "0.2"], "--start shapes TeaCache's rule"),
        (["--max-cached-in-row", "2"], "--max-cached-in-row shapes TeaCache's rule"),
    ],
)
def test_generate_refuses_a_bad_policy_in_one_line(runner, planned_preset, tmp_path, extra, message):
    from teacli.cli import app

    preset_file = write_preset(planned_preset, tmp_path / "planned.yaml")
    out = tmp_path / "never.png"
    result = runner.invoke(
        app, ["generate", "x", "--model", str(preset_file), "--steps", "8", "--out", str(out), *extra]
    )
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_bench_adds_a_row_per_budget(runner, planned_preset, tmp_path):
    from teacli.cli import app

    preset_file = write_preset(planned_preset, tmp_path / "planned.yaml")
    result = runner.invoke(
        app,
        ["bench", "--model", str(preset_file), "--steps", "8", "--thresh", "0.2", "--budget", "3,4,6", "--runs", "1",
         "--warmup", "0", "--against", "none", "--json", "-"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["rows"]}
    assert rows["teacache-plan@3"]["computed"] == 3 and rows["teacache-plan@4"]["computed"] == 4
    assert rows["teacache-uniform@6"]["computed"] == 6


def test_calibrate_plan_writes_plans_into_the_preset(runner, tmp_path):
    from teacli.cli import app
    from teacli.models.catalog import load_preset_file

    out = tmp_path / "tiny-planned.yaml"
    result = runner.invoke(
        app,
        ["calibrate", "--model", "tiny-flux", "--steps", "6", "--num-prompts", "3", "--plan", "--plan-prompts", "2",
         "--budgets", "3-4", "--max-gap", "2", "--forecast-gap", "1", "--out", str(out), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "planning cost" in result.stderr
    costs = Costs.from_dict(6, json.loads(result.stdout)["plan_costs"])
    assert costs.max_gap == 2 and costs.gap(1, 3, True) is not None and costs.gap(1, 4, True) is None
    written = load_preset_file(out)
    assert set(written.plans[6]) == {3, 4}
    for budget, timeline in written.plans[6].items():
        assert from_timeline(timeline).budget == budget


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budgets", "3-4"], "--budgets goes with --plan"),
        (["--batch", "1"], "--batch goes with --plan"),
        (["--plan", "--max-gap", "9"], "--max-gap must be between 1 and 4"),
        (["--plan", "--budgets", "1-3"], "not within 2-6"),
        (["--plan", "--budgets", "a"], "--budgets takes"),
        (["--plan", "--batch", "0"], "--batch must be"),
    ],
)
def test_calibrate_refuses_bad_plan_options_before_loading(runner, tmp_path, extra, message):
    from teacli.cli import app

    result = runner.invoke(app, ["calibrate", "--model", "tiny-flux", "--steps", "6", "--out", "p.yaml", *extra])
    assert result.exit_code == 1, result.output
    assert message in result.output


def test_prompts_run_the_plan_and_a_lines_thresh_runs_the_rule(runner, planned_preset, tmp_path):
    from teacli.cli import app
    from teacli.generation.media import read_metadata

    preset_file = write_preset(planned_preset, tmp_path / "planned.yaml")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a cat"}\n{"prompt": "a dog", "thresh": 0.3}\n')
    out = tmp_path / "out"
    args = ["generate", "--prompts", str(prompts), "--model", str(preset_file), "--steps", "8", "--out-dir", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    by_prompt = {entry["prompt"]: entry for entry in entries}
    assert by_prompt["a cat"]["settings"]["budget"] == 4 and by_prompt["a cat"]["computed"] == 4
    assert by_prompt["a dog"]["settings"]["thresh"] == 0.3 and "budget" not in by_prompt["a dog"]["settings"]
    assert read_metadata(out / by_prompt["a cat"]["file"])["policy"] == PLANNED
    # The same command again resumes: the recorded settings match, nothing is made again.
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 2


def test_the_default_budget_is_the_fewest_steps_that_reach_the_target():
    from teacli.calibrate.plans import Chosen, PlanCalibration, psnr_of
    from teacli.engine.plan import uniform

    errors = {3: 1e-2, 4: 5e-5, 5: 2e-4, 6: 1e-5}  # 20, 43, 37, 50 dB: not monotone, as measured ones need not be
    chosen = {budget: Chosen(uniform(10, budget), error, 1) for budget, error in errors.items()}
    planned = PlanCalibration(10, 2, 4, 2, chosen, 100)
    assert planned.default_budget(40.0) == 4
    assert planned.default_budget(45.0) == 6
    assert planned.default_budget(90.0) == 6  # none reaches it: the largest planned
    assert planned.block()["psnr"][4] == round(psnr_of(5e-5), 2) == 43.01
    assert psnr_of(0.0) == 100.0
