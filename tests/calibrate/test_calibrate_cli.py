"""teacli calibrate end to end on tiny pipelines, and every bad input refused with nothing written."""

import datetime
import json

import diffusers
import pytest
from support import generate_and_check

import teacli
from teacli.cli import app
from teacli.models.catalog import load_preset_file

# These tests were written around tiny-flux as the default model: keep it so (fast, CFG-free).
pytestmark = pytest.mark.usefixtures("tiny_flux_default")

FAST = ["--num-prompts", "3", "--steps", "10", "--device", "cpu"]


def calibrate(runner, *args):
    return runner.invoke(app, ["calibrate", *args], catch_exceptions=False)


def test_calibrate_tiny_flux_writes_a_preset_that_loads_back_and_drives_generate(runner, tmp_path, monkeypatch):
    result = calibrate(runner, *FAST, "--out", "cal.yaml")
    assert result.exit_code == 0, result.output
    assert "calibration: 3 prompts x 10 steps, order 4" in result.output
    assert "only 27 pairs (under 1000)" in result.output  # 3 prompts x 9 consecutive pairs, one branch
    assert "wrote cal.yaml" in result.output

    preset = load_preset_file(tmp_path / "cal.yaml")
    assert preset.name == "tiny-flux" and preset.model == "embedded:tiny-flux"
    assert preset.coefficients_source == "calibrated" and preset.coefficients_kind == "calibrated"
    assert len(preset.coefficients) == 5
    block = preset.calibration
    assert block["date"] == datetime.date.today().isoformat()
    assert block["teacli_version"] == teacli.__version__ and block["diffusers_version"] == diffusers.__version__
    assert (block["prompts"], block["steps"], block["seed"], block["order"]) == (3, 10, 0, 4)
    assert block["guidance"] == 3.5 and (block["height"], block["width"]) == (64, 64)  # the preset's defaults
    assert block["pairs"] == 27 and 0.0 <= block["r2"] <= 1.0
    assert preset.rel_l1_range == tuple(block["x_range"])  # the decision clamps to what was seen
    low, high = block["x_range"]
    assert 0 < low < high

    # The same seed and prompts fit the same coefficients.
    again = calibrate(runner, *FAST, "--out", "again.yaml")
    assert again.exit_code == 0, again.output
    assert load_preset_file(tmp_path / "again.yaml").coefficients == preset.coefficients

    # The written file drives generate as it is; the e2e check replays every decision with its
    # calibrated coefficients and its clamp range.
    stats, _ = generate_and_check(
        monkeypatch, tmp_path, str(tmp_path / "cal.yaml"), steps=10, thresh=0.15, branches={"cond"}
    )
    assert stats.totals.cached > 0
    assert (
        "calibrated at" not in runner.invoke(app, ["generate", "a cat", "--model", "cal.yaml", "--steps", "10"]).output
    )
    other = runner.invoke(app, ["generate", "a cat", "--model", "cal.yaml", "--steps", "8", "-o", "b.png"])
    assert "coefficients calibrated at 10 steps, generating with 8" in other.output


def test_the_coefficient_comparison_benchmark_runs_and_compares_equal_work(runner, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    try:
        from compare_coefficients import compare
    finally:
        sys.path.pop(0)
    assert calibrate(runner, *FAST, "--out", "cal.yaml").exit_code == 0
    _, other, by_count = compare("tiny-flux", "cal.yaml", ["a cat"], steps=10, thresholds=(0.2, 0.5, 1.0))
    assert other.coefficients_source == "calibrated"
    assert by_count, "the two coefficient sets should meet at some computed count"
    for computed, pairs in by_count.items():
        assert 2 <= computed < 10
        assert all(0 < a < float("inf") and 0 < b < float("inf") for a, b in pairs)


def test_calibrate_accepts_a_preset_file_and_a_prompts_file(runner, tmp_path):
    (tmp_path / "prompts.txt").write_text("# two prompts\na cat\na dog\n")
    assert calibrate(runner, *FAST, "--out", "first.yaml").exit_code == 0
    result = calibrate(
        runner, "--model", "first.yaml", "--prompts", "prompts.txt", "--steps", "6", "--order", "2",
        "--name", "my-flux", "--seed", "7", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    preset = load_preset_file(tmp_path / "my-flux-calibrated.yaml")  # the default --out follows --name
    assert preset.name == "my-flux" and len(preset.coefficients) == 3
    assert (preset.calibration["prompts"], preset.calibration["pairs"], preset.calibration["seed"]) == (2, 10, 7)
    assert preset.calibration["from_preset"] == "tiny-flux"


def test_calibrate_with_true_cfg_fits_each_branch(runner, tmp_path):
    result = calibrate(runner, "--model", "tiny-qwen-image", *FAST, "--negative-prompt", "blurry", "--out", "q.yaml")
    assert result.exit_code == 0, result.output
    block = load_preset_file(tmp_path / "q.yaml").calibration
    assert block["pairs"] == 54 and block["negative_prompt"] is True
    assert set(block["branches"]) == {"cond", "uncond"}
    assert all(branch["pairs"] == 27 for branch in block["branches"].values())
    assert "uncond" in result.output


def test_calibrate_two_experts_fits_each_its_own(runner, tmp_path):
    result = calibrate(runner, "--model", "tiny-wan22", "--num-prompts", "2", "--steps", "6", "--out", "w.yaml")
    assert result.exit_code == 0, result.output
    preset = load_preset_file(tmp_path / "w.yaml")
    expert = preset.experts["transformer_2"]
    assert expert.coefficients_source == "calibrated"
    assert expert.coefficients != preset.coefficients
    assert expert.rel_l1_range == tuple(preset.calibration["experts"]["transformer_2"]["x_range"])
    assert preset.calibration["pairs"] + preset.calibration["experts"]["transformer_2"]["pairs"] > 0


def dit_pipeline(tmp_path):
    path = tmp_path / "dit-pipeline"
    path.mkdir()
    (path / "model_index.json").write_text(
        json.dumps({"_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"]})
    )
    return str(path)


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--steps", "2"], "--steps must be at least 3"),
        (["--order", "0"], "--order must be between 1 and 6"),
        (["--order", "7"], "--order must be between 1 and 6"),
        (["--num-prompts", "0"], "--num-prompts must be an integer between 1 and 100000, got 0"),
        (["--prompts", "empty.txt"], "holds no prompts"),
        (["--prompts", "missing.txt"], "does not exist"),
        (["--prompts", "."], "is a directory"),
        (["--prompts", "binary.txt"], "not UTF-8"),
        (["--model", "DIT"], "DiTTransformer2DModel"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--out", "out.json"], "must end in .yaml or .yml"),
        (["--out", "missing-dir/out.yaml"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(runner, tmp_path, arguments, message):
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    arguments = [dit_pipeline(tmp_path) if a == "DIT" else a for a in arguments]
    before = set(tmp_path.rglob("*"))
    result = runner.invoke(app, ["calibrate", "--steps", "4", *arguments])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert set(tmp_path.rglob("*")) == before  # no preset written, nothing half-written


def test_an_existing_preset_is_kept_without_overwrite(runner, tmp_path):
    target = tmp_path / "tiny-flux-calibrated.yaml"
    target.write_text("my own notes\n")
    result = runner.invoke(app, ["calibrate", *FAST])
    assert result.exit_code == 1 and "already exists; pass --overwrite" in result.stderr
    assert target.read_text() == "my own notes\n"
    assert calibrate(runner, *FAST, "--overwrite").exit_code == 0
    assert load_preset_file(target).coefficients_source == "calibrated"


def test_interrupted_calibration_writes_nothing(runner, tmp_path, monkeypatch):
    import teacli.calibrate.coefficients

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(teacli.calibrate.coefficients, "run_calibration", interrupted)
    result = runner.invoke(app, ["calibrate", *FAST])
    assert result.exit_code == 130
    assert "interrupted; nothing was written" in result.stderr
    assert list(tmp_path.glob("*.yaml")) == []
