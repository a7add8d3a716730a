"""generate, bench and calibrate with the options users ask for: cache window, runs, residuals on the host,
batches, JSON for scripts, compile, and the warnings that guard against useless settings."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from teacli.cli import app
from teacli.generation.media import read_metadata

PROMPT = "a red circle on a blue background"
FAST = ["--model", "tiny-flux", "--steps", "12", "--device", "cpu"]


@pytest.fixture
def runner(teacli_cache, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def run_json(runner, *args) -> dict:
    result = runner.invoke(app, ["generate", PROMPT, *FAST, "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def decisions(report: dict) -> list[str]:
    return [record["decision"] for record in report["records"]]


def test_json_report_is_the_only_thing_on_stdout(runner, tmp_path):
    report = run_json(runner, "--thresh", "0.25", "-o", "a.png")
    assert report["outputs"] == ["a.png"] and (tmp_path / "a.png").is_file()
    assert report["totals"]["calls"] == 12 == len(report["records"])
    totals = report["totals"]
    assert totals["computed"] + totals["forced"] + totals["cached"] == 12
    assert report["settings"]["seed"] == 0


def test_human_report_goes_to_stderr_with_json(runner):
    result = runner.invoke(app, ["generate", PROMPT, *FAST, "--json", "-o", "a.png"])
    assert "timeline" in result.stderr and "wrote a.png" in result.stderr
    assert "timeline" not in result.stdout


def test_cache_window_only_reuses_inside_it(runner):
    wide = decisions(run_json(runner, "--thresh", "5", "-o", "wide.png"))
    window = decisions(run_json(runner, "--thresh", "5", "--start", "0.5", "--end", "0.75", "-o", "window.png"))
    assert "cached" in wide[1:6]  # without the window the early steps are reused at this threshold
    cached_steps = [step for step, decision in enumerate(window) if decision == "cached"]
    assert cached_steps and all(6 <= step < 9 for step in cached_steps)


def test_max_cached_in_row_bounds_every_run_of_reuse(runner):
    free = decisions(run_json(runner, "--thresh", "5", "-o", "free.png"))
    bounded = decisions(run_json(runner, "--thresh", "5", "--max-cached-in-row", "2", "-o", "bounded.png"))

    def longest_run(values):
        best = current = 0
        for value in values:
            current = current + 1 if value == "cached" else 0
            best = max(best, current)
        return best

    assert longest_run(free) > 2
    assert longest_run(bounded) == 2


def test_ret_steps_computes_the_first_steps(runner):
    report = run_json(runner, "--thresh", "5", "--ret-steps", "4", "-o", "r.png")
    assert all(decision != "cached" for decision in decisions(report)[:4])


def test_cache_device_cpu_reports_residual_memory_and_same_image(runner, tmp_path):
    plain = run_json(runner, "--thresh", "0.5", "-o", "plain.png")
    host = run_json(runner, "--thresh", "0.5", "--cache-device", "cpu", "-o", "host.png")
    assert host["residual_device"] == "cpu" and host["peak_residual_bytes"] > 0
    assert decisions(plain) == decisions(host)
    assert Image.open(tmp_path / "plain.png").tobytes() == Image.open(tmp_path / "host.png").tobytes()
    result = runner.invoke(app, ["generate", PROMPT, *FAST, "--cache-device", "cpu", "-o", "h2.png"])
    assert "cached residuals:" in result.stdout and "held on cpu" in result.stdout


def test_num_images_writes_one_file_per_seed_with_metadata(runner, tmp_path):
    report = run_json(runner, "--num-images", "2", "--seed", "7", "-o", "cat.png")
    assert report["outputs"] == ["cat-1.png", "cat-2.png"]
    seeds = [read_metadata(tmp_path / name)["seed"] for name in report["outputs"]]
    assert seeds == [7, 8]
    assert report["totals"]["calls"] == 12  # one call per step for the whole batch


def test_png_metadata_says_what_made_it(runner, tmp_path):
    run_json(runner, "--thresh", "0.3", "--seed", "3", "--negative-prompt", "blurry", "-o", "m.png")
    metadata = read_metadata(tmp_path / "m.png")
    assert metadata["prompt"] == PROMPT and metadata["negative_prompt"] == "blurry"
    assert metadata["seed"] == 3 and metadata["steps"] == 12 and metadata["thresh"] == 0.3
    assert metadata["model"] == "tiny-flux" and metadata["coefficients_source"]
    assert metadata["computed"] + metadata["forced"] + metadata["cached"] == metadata["calls"]
    assert metadata["teacli_version"] and metadata["diffusers_version"]


def test_compile_keeps_the_decisions_and_the_image(runner, tmp_path, monkeypatch):
    import teacli.engine.compile

    # The eager backend runs dynamo's capture without a C++ build; the CLI's default is inductor.
    original = teacli.engine.compile.compile_transformer_blocks
    monkeypatch.setattr(
        teacli.engine.compile, "compile_transformer_blocks", lambda pipe, **kw: original(pipe, backend="eager")
    )
    plain = run_json(runner, "--thresh", "0.5", "-o", "plain.png")
    compiled = run_json(runner, "--thresh", "0.5", "--compile", "-o", "compiled.png")
    assert decisions(plain) == decisions(compiled)
    assert compiled["settings"]["compile"] is True
    a, b = (Image.open(tmp_path / name) for name in ("plain.png", "compiled.png"))
    assert max(abs(x - y) for x, y in zip(a.tobytes(), b.tobytes())) <= 1


def test_short_schedule_warns_and_strict_refuses(runner, tmp_path):
    result = runner.invoke(app, ["generate", PROMPT, "--model", "tiny-flux", "--steps", "4", "-o", "w.png"])
    assert result.exit_code == 0
    assert "warning: 4 steps" in result.stderr
    strict = runner.invoke(app, ["generate", PROMPT, "--model", "tiny-flux", "--steps", "4", "--strict", "-o", "s.png"])
    assert strict.exit_code == 1 and "refused because of --strict" in strict.stderr
    assert not (tmp_path / "s.png").exists()


def test_high_threshold_warns_with_the_tested_range(runner):
    result = runner.invoke(app, ["generate", PROMPT, *FAST, "--thresh", "1.5", "-o", "t.png"])
    assert result.exit_code == 0
    line = next(line for line in result.stderr.splitlines() if line.startswith("warning:"))
    assert "--thresh 1.5 is above 1" in line and "tested thresholds are 0.05-0.8" in line


def test_bench_json_to_stdout(runner):
    result = runner.invoke(
        app,
        ["bench", *FAST, "--thresh", "0.3", "--against", "none", "--runs", "1", "--warmup", "0", "--json", "-"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [row["name"] for row in data["rows"]][0] == "vanilla"
    assert "settings" in data


BAD_OPTIONS = [
    (["--start", "1.5"], "--start is a fraction of the schedule between 0 and 1"),
    (["--start", "0.6", "--end", "0.4"], "--start (0.6) must be below --end (0.4)"),
    (["--max-cached-in-row", "0"], "--max-cached-in-row must be at least 1"),
    (["--ret-steps", "-1"], "--ret-steps must be an integer between 0 and 10000, got -1"),
    (["--cache-device", "gpu"], "--cache-device takes a torch device"),
    (["--num-images", "0"], "--num-images must be an integer between 1 and 1000, got 0"),
    (["--lora", "missing.safetensors"], "LoRA missing.safetensors does not exist"),
    (["--lora-scale", "inf"], "--lora-scale must be a finite number"),
]


@pytest.mark.parametrize("args, message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_is_one_line_and_writes_nothing(runner, tmp_path, args, message):
    result = runner.invoke(app, ["generate", PROMPT, "--model", "tiny-flux", *args])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_lora_through_the_cli_changes_the_image_and_is_recorded(runner, tmp_path):
    pytest.importorskip("peft")
    from support import lora_state_dict, save_lora

    lora = save_lora(tmp_path / "lora", lora_state_dict())
    plain = run_json(runner, "--thresh", "0.5", "-o", "plain.png")
    with_lora = run_json(runner, "--thresh", "0.5", "--lora", str(lora), "--lora-scale", "0.8", "-o", "lora.png")
    assert with_lora["settings"]["lora"] == str(lora) and with_lora["settings"]["lora_scale"] == 0.8
    assert with_lora["totals"]["cached"] > 0
    assert Image.open(tmp_path / "plain.png").tobytes() != Image.open(tmp_path / "lora.png").tobytes()
    assert read_metadata(tmp_path / "lora.png")["load"]["lora"] == str(lora)
    assert plain["settings"]["lora"] is None
