"""The CLI's own polish: --version, env, info, help that says what each option takes, the request in --json, and
the uncached picture kept (--save-baseline) or drawn beside the cached one (--strip)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomllib
from PIL import Image

from teacli import __version__
from teacli.cli import app

FAST = ["--steps", "6", "--device", "cpu"]


def invoke(runner, *args):
    return runner.invoke(app, list(args))


def test_version_prints_teacli_and_its_version(runner):
    result = invoke(runner, "--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"teacli {__version__}"
    assert "--version" in invoke(runner, "--help").stdout


def test_env_json_names_versions_device_and_extras(runner):
    result = invoke(runner, "env", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["teacli"] == __version__ and re.fullmatch(r"\d+\.\d+\.\d+.*", data["python"])
    for library in ("torch", "diffusers", "transformers", "accelerate"):
        assert data[library], library
    assert data["device"] in ("cpu", "cuda", "mps") and data["dtype"] in ("float32", "bfloat16")
    declared = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert set(data["extras"]) == set(declared["optional-dependencies"]) - {"test"}  # every extra a user installs
    assert all(isinstance(extra["installed"], bool) for extra in data["extras"].values())


def test_env_table_reads_at_80_columns(runner, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = invoke(runner, "env")
    assert result.exit_code == 0, result.stderr
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    assert "diffusers" in result.stdout and "extra video" in result.stdout


def test_flags_show_no_value_placeholder(runner):
    for command in ("generate", "bench", "calibrate", "list-models", "env", "info"):
        text = invoke(runner, command, "--help").stdout
        assert "<bool>" not in text, command
    assert "<bool>" not in invoke(runner, "--help").stdout


def test_help_shows_brackets_and_defaults(runner):
    bench = invoke(runner, "bench", "--help").stdout
    assert "teacli[plot]" in bench
    generate = invoke(runner, "generate", "--help").stdout
    model = next(line for line in generate.splitlines() if "--model" in line)
    assert "teacli-shapes" in generate[generate.index(model) :].split("--thresh")[0]
    thresh = generate[generate.index("--thresh") :].split("--budget")[0]
    assert "default: (the preset's)" in thresh
    for flag in ("--save-baseline", "--strip", "--compare-baseline"):
        assert flag in generate


def test_generate_json_has_the_request_and_info_reads_the_file(runner, tmp_path):
    result = invoke(runner, "generate", "a red circle", *FAST, "--seed", "3", "-o", "c.png", "--json")
    assert result.exit_code == 0, result.stderr
    request = json.loads(result.stdout)["request"]
    assert request["prompt"] == "a red circle" and request["steps"] == 6 and request["seed"] == 3
    assert {"height", "width", "guidance", "negative_prompt"} <= set(request)

    info = invoke(runner, "info", "c.png", "--json")
    assert info.exit_code == 0, info.stderr
    recorded = json.loads(info.stdout)
    assert {key: recorded[key] for key in request} == request and recorded["teacli_version"] == __version__
    table = invoke(runner, "info", "c.png")
    assert table.exit_code == 0 and "a red circle" in table.stdout and "FluxTransformer2DModel" in table.stdout


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"not an image", "cannot be read as an output teacli wrote"),
        ("plain", "has no teacli metadata"),
    ],
)
def test_info_on_a_file_teacli_did_not_write_is_one_line(runner, tmp_path, content, message):
    if content == "plain":
        Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    elif content is not None:
        (tmp_path / "x.png").write_bytes(content)
    result = invoke(runner, "info", "x.png")
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_info_refuses_a_sidecar_teacli_did_not_write(runner, tmp_path):
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    (tmp_path / "clip.gif.json").write_text(json.dumps({"prompt": "someone else's"}))
    result = invoke(runner, "info", "clip.gif")
    assert result.exit_code == 1 and "was not written by teacli" in result.stderr


def test_compare_baseline_keeps_the_uncached_picture_and_draws_the_strip(runner, tmp_path):
    args = ["generate", "a red circle", *FAST, "-o", "c.png", "--save-baseline", "b.png", "--strip", "s.png"]
    result = invoke(runner, *args)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "b.png").is_file() and (tmp_path / "s.png").is_file()
    assert "measured speedup" in result.stdout  # the baseline ran: --save-baseline and --strip need it
    assert "--compare-baseline measures it" not in result.stdout  # the estimate's hint, not when measured
    assert json.loads(invoke(runner, "info", "b.png", "--json").stdout)["policy"] == "none"
    again = invoke(runner, *args[:-4], "-o", "d.png", "--save-baseline", "b.png")
    assert again.exit_code == 1 and "b.png already exists; pass --overwrite" in again.stderr
    assert not (tmp_path / "d.png").exists()


def test_the_estimate_hint_prints_without_a_baseline(runner):
    result = invoke(runner, "generate", "a red circle", *FAST, "-o", "c.png")
    assert "--compare-baseline measures it" in result.stdout


@pytest.mark.parametrize("flag, value", [("--strip", "s.png"), ("--save-baseline", "b.png")])
def test_comparison_files_go_with_one_prompt(runner, tmp_path, flag, value):
    (tmp_path / "p.txt").write_text("a cat\n")
    result = invoke(runner, "generate", "--prompts", "p.txt", flag, value)
    assert result.exit_code == 1
    assert "--compare-baseline, --save-baseline and --strip go with one PROMPT" in result.stderr


def test_the_same_file_twice_is_refused_with_the_flags_named(runner):
    result = invoke(runner, "generate", "a red circle", *FAST, "-o", "c.png", "--strip", "c.png")
    assert result.exit_code == 1
    assert "--out, --save-baseline and --strip must be different files" in result.stderr
