"""--offload and --quantize on generate, bench and calibrate: refused in one line where they cannot work, and
recorded in the report, the JSON and the output's metadata where they ran."""

from __future__ import annotations

import json

import pytest

import teacli.models.memory as memory
from teacli.cli import app

COMMANDS = ("generate", "bench", "calibrate")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_that_loads_a_model_takes_both(runner, command):
    shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
    assert "--offload" in shown and "<model|sequential|group>" in shown
    assert "--quantize" in shown and "torchao-int8" in shown and "teacli[quantize]" in shown


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_value_is_a_usage_error(runner, command):
    result = runner.invoke(
        app, [command, "x", "--offload", "disk"] if command == "generate" else [command, "--offload", "disk"]
    )
    assert result.exit_code == 2
    assert "'disk' is not one of 'model', 'sequential', 'group'" in result.stderr


def test_offloading_a_cpu_run_is_refused_before_loading(runner, tmp_path):
    result = runner.invoke(app, ["generate", "a red circle", "--model", "tiny-flux", "--offload", "group"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: --offload group moves weights between the CPU and a GPU; this run is on cpu, where they all are "
        "already: drop offload"
    ]
    assert "loading" not in result.stderr  # refused before the model loads
    assert list(tmp_path.iterdir()) == []


def test_a_cuda_only_quantization_on_cpu_names_those_that_run_here(runner, monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "_installed", lambda module: True)  # as if bitsandbytes were installed
    result = runner.invoke(app, ["bench", "--model", "tiny-flux", "--quantize", "bnb-nf4", "--runs", "1"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --quantize bnb-nf4 runs on CUDA GPUs only; this run is on cpu: use one of torchao-int8, "
        "torchao-int8dq, quanto-int8, quanto-float8, quanto-int4"
    )
    assert list(tmp_path.iterdir()) == []


def test_generate_quantized_reports_and_records_it(runner, tmp_path):
    result = runner.invoke(
        app, ["generate", "a red circle", "--model", "tiny-flux", "--quantize", "quanto-int8", "--steps", "6",
              "--out", "q.png", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "memory: denoisers quantized: optimum-quanto int8 weights" in result.stderr
    report = json.loads(result.stdout)
    assert report["settings"]["quantize"] == "quanto-int8" and report["settings"]["offload"] is None
    info = runner.invoke(app, ["info", "q.png", "--json"])
    assert json.loads(info.stdout)["load"]["quantize"] == "quanto-int8"


def test_bench_rows_run_on_the_quantized_pipeline(runner, tmp_path):
    result = runner.invoke(
        app, ["bench", "--model", "tiny-flux", "--steps", "6", "--runs", "1", "--warmup", "0", "--thresh", "0.3",
              "--against", "none", "--quantize", "torchao-int8", "--json", "b.json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["settings"]["quantize"] == "torchao-int8"
    assert [row["name"] for row in data["rows"]] == ["vanilla", "teacache@0", "teacache@0.3"]


def test_calibrate_fits_a_quantized_model(runner, tmp_path):
    result = runner.invoke(
        app, ["calibrate", "--model", "tiny-flux", "--num-prompts", "2", "--steps", "6", "--quantize", "quanto-int8",
              "--out", "fit.yaml"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "coefficients" in (tmp_path / "fit.yaml").read_text()


def test_bench_compares_cache_and_quantization_combinations(runner, tmp_path):
    result = runner.invoke(
        app, ["bench", "--model", "tiny-flux", "--steps", "6", "--runs", "1", "--warmup", "0", "--thresh", "0.3",
              "--against", "none", "--quantize", "none,quanto-int8", "--json", "b.json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "quantized: none, quanto-int8 (against the first)" in result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["quantizations"] == [None, "quanto-int8"]
    rows = {row["name"]: row for row in data["rows"]}
    assert list(rows) == [
        "vanilla", "teacache@0", "teacache@0.3",
        "vanilla +quanto-int8", "teacache@0 +quanto-int8", "teacache@0.3 +quanto-int8",
    ]  # fmt: skip
    assert {row["quantize"] for row in data["rows"]} == {None, "quanto-int8"}
    # Everything is scored against the unquantized vanilla: quantization alone costs some dB, the cache more.
    quantized = rows["vanilla +quanto-int8"]
    assert not quantized["psnr_capped"] and 20 < quantized["psnr"] < 100
    assert rows["teacache@0 +quanto-int8"]["psnr"] == quantized["psnr"]  # caching off adds nothing
    assert rows["teacache@0.3 +quanto-int8"]["computed"] < 6


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["generate", "x", "--quantize", "quanto-int8,none"], "--quantize takes bnb-nf4, "),
        (["bench", "--quantize", "none,int3"], "--quantize takes bnb-nf4, "),
        (["bench", "--quantize", "none,quanto-int8", "--isolate"], "--quantize with several methods compares them"),
    ],
)
def test_quantize_lists_are_for_bench_on_one_prompt(runner, tmp_path, command, message):
    result = runner.invoke(app, command)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert list(tmp_path.iterdir()) == []


def test_none_means_not_quantized_on_every_command(runner, tmp_path):
    result = runner.invoke(
        app, ["generate", "a red circle", "--model", "tiny-flux", "--quantize", "none", "--steps", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["quantize"] is None
    assert "memory:" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "--prompts", "p.txt", "--offload", "model"],
        ["calibrate", "--num-prompts", "2", "--steps", "4", "--offload", "group"],
        ["bench", "--runs", "1", "--quantize", "none,torchao-float8"],
    ],
)
def test_what_the_device_cannot_do_is_refused_before_loading_on_every_path(runner, tmp_path, command):
    (tmp_path / "p.txt").write_text("a red circle\na blue square\n")
    result = runner.invoke(app, [*command, "--model", "tiny-flux"])
    assert result.exit_code == 1
    assert [line for line in result.stderr.splitlines() if line.strip()] == [result.stderr.strip().splitlines()[-1]]
    assert "this run is on cpu" in result.stderr and "loading" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]  # no output, no manifest
