"""The CLI through Typer's runner, the installed console script, and every bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from teacli.cli import app

PROMPT = "a red circle on a blue background"
FAST = ["--steps", "6", "--device", "cpu"]


@pytest.fixture
def runner(teacli_cache, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")  # Rich wraps at the terminal width; keep report lines whole
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_generate_writes_an_image_and_reports(runner, tmp_path):
    result = invoke(runner, "generate", PROMPT, "--thresh", "0.25", *FAST, "--out", "fox.png")
    assert result.exit_code == 0, result.output
    image = Image.open(tmp_path / "fox.png")
    assert image.size == (64, 64)
    assert "computed" in result.output and "cached" in result.output and "total" in result.output
    assert "estimated speedup" in result.output
    assert "wrote fox.png" in result.output


def test_generate_default_output_is_numbered_and_never_overwrites(runner, tmp_path):
    for _ in range(2):
        assert invoke(runner, "generate", PROMPT, *FAST).exit_code == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["teacli-0001.png", "teacli-0002.png"]


def test_generate_compare_baseline_reports_measured_speedup_and_psnr(runner):
    result = invoke(runner, "generate", PROMPT, "--thresh", "0", *FAST, "--compare-baseline", "-o", "a.png")
    assert result.exit_code == 0, result.output
    assert "measured speedup" in result.output
    assert "inf (identical)" in result.output  # thresh 0 computes every step: same image


def test_generate_with_negative_prompt_reports_both_branches(runner):
    result = invoke(runner, "generate", PROMPT, *FAST, "--negative-prompt", "a green square", "-o", "b.png")
    assert result.exit_code == 0, result.output
    assert "cond" in result.output and "uncond" in result.output


def test_bench_rows_and_json(runner, tmp_path):
    result = invoke(
        runner, "bench", "--model", "tiny-flux", "--thresh", "0,0.3", "--steps", "6", "--runs", "2", "--warmup", "1",
        "--compare-baseline", "--against", "none", "--json", "bench.json", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "bench.json").read_text())
    rows = {row["name"]: row for row in data["rows"]}
    assert list(rows) == ["vanilla", "teacache@0", "teacache@0.3"]  # 0 is not run twice
    assert rows["vanilla"]["computed"] == 6 and len(rows["vanilla"]["seconds"]) == 2
    assert rows["teacache@0"]["computed"] == 6 and rows["teacache@0"]["psnr_capped"]
    assert rows["teacache@0.3"]["computed"] < 6 and rows["teacache@0.3"]["speedup"] > 0
    assert "vanilla" in result.output and "teacache@0.3" in result.output


def test_list_models(runner):
    from teacli.models.catalog import builtin_presets

    result = invoke(runner, "list-models")
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 5}
    for preset in builtin_presets().values():
        marks = [m for m, on in (("default", preset.name == "teacli-shapes"), ("test", preset.is_test_model)) if on]
        label = f"{preset.name} ({', '.join(marks)})" if marks else preset.name
        assert label in rows, f"{label} missing from list-models"
        assert f"│ {preset.coefficients_kind}" in rows[label]
    assert "tiny-flux (test)" in rows and "flux-dev" in rows and "teacli-shapes (default)" in rows
    assert "published" in rows["flux-dev"] and "borrowed" in rows["flux-kontext-dev"]
    assert "Lumina2Transformer2DModel" in result.output.split("have an extractor:")[1]


def test_console_script_runs_in_a_subprocess(teacli_cache, tmp_path):
    executable = shutil.which("teacli")
    assert executable, "the teacli console script is not installed"
    env = dict(os.environ, TEACLI_CACHE_DIR=teacli_cache, HF_HUB_OFFLINE="1", COLUMNS="200")
    done = subprocess.run(
        [executable, "generate", PROMPT, *FAST, "-o", str(tmp_path / "c.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c.png").is_file() and "cached" in done.stdout
    module = subprocess.run([sys.executable, "-m", "teacli", "--help"], capture_output=True, text=True, env=env)
    assert module.returncode == 0 and "generate" in module.stdout


BAD_INPUTS = [
    (["generate", PROMPT, "--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["generate", PROMPT, "--thresh", "-0.1"], "--thresh must be a finite number >= 0"),
    (["generate", PROMPT, "--thresh", "nan"], "--thresh must be a finite number >= 0"),
    (["generate", PROMPT, "--thresh", "abc"], "Invalid value for '--thresh'"),
    (["generate", PROMPT, "--steps", "1"], "--steps must be an integer between 2 and 10000, got 1"),
    (["generate", PROMPT, "--out", "missing-dir/x.png"], "does not exist"),
    (["generate", PROMPT, "--out", "x.unknownext"], "this model makes images: cannot write one as '.unknownext'"),
    (["generate", PROMPT, "--model", "missing.yaml"], "preset file missing.yaml does not exist"),
    (["bench", "--thresh", "0.1,abc"], "'abc' is not a number"),
    (["bench", "--thresh", "0.1,-1"], "--thresh must be a finite number >= 0"),
    (["bench", "--runs", "0"], "--runs must be an integer between 1 and 1000, got 0"),
    (["bench", "--warmup", "-1"], "--warmup must be an integer between 0 and 1000, got -1"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a[2:] or a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_without_traceback_or_output(runner, tmp_path, args, message):
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in result.output + result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_malformed_preset_file_names_the_file_and_field(runner, tmp_path):
    preset = tmp_path / "bad.yaml"
    preset.write_text("name: bad\nmodel: x\n")
    result = runner.invoke(app, ["generate", PROMPT, "--model", str(preset)])
    assert result.exit_code == 1
    assert f"preset {preset}: field 'pipeline': missing" in " ".join(result.stderr.split())


def test_preset_without_extractor_is_refused(runner, tmp_path):
    preset = tmp_path / "unet.yaml"
    preset.write_text(
        "name: sd15\nmodel: x/y\npipeline: StableDiffusionPipeline\ntransformer: UNet2DConditionModel\n"
        "extractor: unet\ncoefficients: [1, 0]\ncoefficients_source: none\nthresh: 0.1\ndefaults: {steps: 20}\n"
    )
    result = runner.invoke(app, ["generate", PROMPT, "--model", str(preset)])
    assert result.exit_code == 1
    assert "no extractor for UNet2DConditionModel" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.yaml"]


def test_existing_output_is_not_overwritten_without_flag(runner, tmp_path):
    target = tmp_path / "keep.png"
    target.write_bytes(b"the user's file")
    result = runner.invoke(app, ["generate", PROMPT, *FAST, "--out", str(target)])
    assert result.exit_code == 1 and "already exists" in result.stderr
    assert target.read_bytes() == b"the user's file"
    assert invoke(runner, "generate", PROMPT, *FAST, "--out", str(target), "--overwrite").exit_code == 0
    assert Image.open(target).size == (64, 64)


def test_interrupt_leaves_no_output(runner, tmp_path, monkeypatch):
    import teacli.generation.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(teacli.generation.runner, "generate", interrupted)
    monkeypatch.setattr("teacli.generation.runner.generate", interrupted)
    result = runner.invoke(app, ["generate", PROMPT, *FAST, "--out", "never.png"])
    assert result.exit_code == 130
    assert "interrupted" in result.stderr
    assert not (tmp_path / "never.png").exists()


def test_verbose_logs_one_line_per_transformer_call(runner):
    quiet = invoke(runner, "generate", PROMPT, *FAST, "-o", "q.png")
    assert "TeaCache enabled on transformer (FluxTransformer2DModel)" in " ".join(quiet.stderr.split())
    assert "step 3:" not in quiet.stderr
    loud = invoke(runner, "generate", PROMPT, *FAST, "-o", "v.png", "--verbose")
    per_call = [line for line in loud.stderr.splitlines() if "transformer cond step" in line]
    assert len(per_call) == 6
    assert "rel_l1=" in per_call[1] and any(d in per_call[1] for d in ("computed", "cached"))


def test_report_counts_per_branch_are_right_with_true_cfg(teacli_cache, monkeypatch, tmp_path):
    from support import generate_and_check

    stats, counts = generate_and_check(
        monkeypatch,
        tmp_path,
        "tiny-flux",
        "--negative-prompt",
        "blurry",
        steps=8,
        thresh=0.4,
        branches={"cond", "uncond"},
    )
    assert counts["total"][0] == 16 and stats.totals.cached > 0


def test_unsupported_transformer_is_refused_before_loading_with_what_to_do(runner, tmp_path):
    pipeline_dir = tmp_path / "dit-pipeline"
    pipeline_dir.mkdir()
    (pipeline_dir / "model_index.json").write_text(
        json.dumps({"_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"]})
    )
    result = runner.invoke(app, ["generate", PROMPT, "--model", str(pipeline_dir), "-o", "x.png"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "DiTTransformer2DModel" in lines[0] and "no extractor" in lines[0]
    assert "FluxTransformer2DModel" in lines[0]  # the supported classes are listed
    assert "Adding a model" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_preset_naming_the_wrong_transformer_class_is_caught_after_loading(runner, tmp_path):
    from teacli.engine.registry import EXTRACTOR_REGISTRY
    from teacli.models.catalog import builtin_presets

    # A preset that claims a class with an extractor, for a pipeline whose transformer has none.
    text = open(builtin_presets()["tiny-flux"].source).read()
    saved = EXTRACTOR_REGISTRY.pop("FluxTransformer2DModel")
    try:
        EXTRACTOR_REGISTRY["SomethingElse"] = saved
        wrong = tmp_path / "claims-other.yaml"
        wrong.write_text(text.replace("transformer: FluxTransformer2DModel", "transformer: SomethingElse"))
        result = runner.invoke(app, ["generate", PROMPT, "--model", str(wrong), "-o", "y.png", *FAST])
    finally:
        EXTRACTOR_REGISTRY.pop("SomethingElse", None)
        EXTRACTOR_REGISTRY["FluxTransformer2DModel"] = saved
    assert result.exit_code == 1, result.output
    assert "its transformer is a FluxTransformer2DModel" in result.stderr
    assert not (tmp_path / "y.png").exists()
