"""Preset files a user (or someone handing them one) can get wrong in ways that used to hang, eat memory or crash
late: YAML alias bombs, FIFOs in a preset folder, call_kwargs that override what teacli sets, experts naming a
denoiser the pipeline lacks, and defaults outside the command line's bounds."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from support import make_flux_transformer

from teacli.cli import app
from teacli.engine.apply import DENOISER_COMPONENTS
from teacli.generation.runner import PER_PROMPT_ARGUMENTS, GenerationRequest, generate
from teacli.models.catalog import (
    PresetError,
    builtin_presets,
    load_preset_file,
    preset_to_dict,
    user_presets,
)
from teacli.models.loading import check_loaded_transformers
from teacli.models.preset_fields import EXPERT_NAMES, RESERVED_CALL_KWARGS
from teacli.models.preset_files import MAX_PRESET_BYTES, MAX_PRESET_DEPTH, MAX_PRESET_NODES

PROMPT = "a red circle"
SHORT = 600  # an error line: the file, the field and what is wrong (known fields listed), never a value in full


def preset_text(**changes) -> str:
    return yaml.safe_dump(preset_to_dict(builtin_presets()["tiny-flux"]) | changes)


def write_preset(path: Path, **changes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(preset_text(**changes), encoding="utf-8")
    return path


def refusal(path: Path) -> str:
    with pytest.raises(PresetError) as raised:
        load_preset_file(path)
    message = str(raised.value)
    assert str(path) in message and len(message) < SHORT and "\n" not in message, message
    return message


def billion_laughs(levels: int = 9, field: str | None = None) -> str:
    """The classic: each anchor a list of 9 aliases of the one before, 9**levels strings in all. With `field`,
    the anchors are written inside that field of a valid preset, so the whole value is what it holds."""
    anchors = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        anchors.append(f"&l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    if field is not None:
        return inside(field, ", ".join(anchors))
    lines = [f"l{level}: {anchor}" for level, anchor in enumerate(anchors)]
    return "\n".join(lines) + f"\nname: *l{levels - 1}\n"


def inside(field: str, flow: str) -> str:
    """A valid preset whose top-level `field` holds the flow sequence [flow] instead of its value."""
    lines = preset_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"{field}: "))
    lines[index] = f"{field}: [{flow}]"
    return "\n".join(lines) + "\n"


def run_cli(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """The real command in a subprocess: a hang shows as a timeout here, not as a stuck test session."""
    environment = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200", **env)
    return subprocess.run(
        [sys.executable, "-m", "teacli", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


# --- YAML that expands past any preset ---------------------------------------------------------------------


def test_an_alias_bomb_is_refused_at_once_with_a_short_message(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs(), encoding="utf-8")
    started = time.perf_counter()
    message = refusal(path)
    assert time.perf_counter() - started < 1.0  # was a minute and gigabytes, then a MemoryError
    assert "too many YAML aliases/nodes" in message


@pytest.mark.parametrize("levels", [3, 5])
def test_a_bomb_in_a_known_field_is_never_printed_whole(tmp_path, levels):
    # 9**3 = 729 strings: read, and refused as a name, in a short message; 9**5 = 59049: counted out.
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs(levels, field="name"), encoding="utf-8")
    message = refusal(path)
    if 9**levels < MAX_PRESET_NODES:
        assert "field 'name': expected a non-empty string, got [[" in message and message.endswith("...")
    else:
        assert "too many YAML aliases/nodes" in message


def test_a_value_whose_repr_is_megabytes_is_not_printed(tmp_path):
    # Under the node limit (137 values), yet written out it is over a megabyte.
    wide = '&a ["' + "x" * 20_000 + '"], &b [*a, *a, *a, *a, *a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b, *b, *b]'
    path = tmp_path / "wide.yaml"
    path.write_text(inside("pipeline", wide), encoding="utf-8")
    assert "field 'pipeline': expected a non-empty string, got [[" in refusal(path)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: " + "[" * 5000 + "]" * 5000 + "\n", f"nested more than {MAX_PRESET_DEPTH} levels"),
        ("name: [" + "1, " * 200_000 + "1]\n", "too many YAML aliases/nodes"),
        ("name: &loop [*loop]\n", "refers to a value that contains it"),
        ("# " + "x" * MAX_PRESET_BYTES + "\n", f"is larger than {MAX_PRESET_BYTES} bytes"),
    ],
    ids=["deep", "flat-but-huge", "self-reference", "over-the-size-cap"],
)
def test_other_oversized_yaml_is_refused_quickly(tmp_path, text, words):
    path = tmp_path / "big.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    assert words in refusal(path)
    assert time.perf_counter() - started < 2.0


def test_plain_anchors_and_aliases_still_work(tmp_path):
    coefficients = list(builtin_presets()["tiny-flux"].coefficients)
    text = preset_text(coefficients=coefficients).replace("coefficients:\n", "coefficients: &fit\n", 1)
    text += "experts:\n  transformer:\n    coefficients: *fit\n"
    path = tmp_path / "anchors.yaml"
    path.write_text(text, encoding="utf-8")
    preset = load_preset_file(path)
    assert preset.experts["transformer"].coefficients == preset.coefficients == tuple(coefficients)


def test_python_tags_are_still_refused(tmp_path):
    path = tmp_path / "tag.yaml"
    path.write_text("name: !!python/name:os.system\n", encoding="utf-8")
    assert "!!python/object are not allowed" in refusal(path)


def test_the_cli_refuses_an_alias_bomb_in_one_line(tmp_path):
    (tmp_path / "bomb.yaml").write_text(billion_laughs(), encoding="utf-8")
    started = time.perf_counter()
    line = one_error_line(run_cli("generate", PROMPT, "--model", "bomb.yaml", cwd=tmp_path))
    assert "bomb.yaml" in line and "too many YAML aliases/nodes" in line and len(line) < SHORT
    assert time.perf_counter() - started < 60  # the interpreter and torch start; the file itself takes no time


def test_the_cli_refuses_an_alias_bomb_in_a_preset_folder(tmp_path):
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "bomb.yaml").write_text(billion_laughs(), encoding="utf-8")
    line = one_error_line(run_cli("list-models", cwd=tmp_path, TEACLI_PRESETS=str(folder)))
    assert "bomb.yaml" in line and "too many YAML aliases/nodes" in line


# --- files that are not regular files ----------------------------------------------------------------------

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this OS")


def finishes(function, seconds: float = 10.0):
    """function()'s result or exception, or a failure if it blocks (opening a FIFO waits for a writer)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function} blocked"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@needs_fifo
def test_a_fifo_given_as_a_preset_file_is_refused_without_opening_it(tmp_path):
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    with pytest.raises(PresetError, match=r"cannot be read \(a named pipe \(FIFO\), not a regular file\)") as raised:
        finishes(lambda: load_preset_file(path))
    assert str(path) in str(raised.value)


@needs_fifo
def test_special_files_in_a_preset_folder_are_skipped_with_a_warning(tmp_path, monkeypatch):
    folder = tmp_path / "presets"
    write_preset(folder / "mine.yaml", name="mine")
    os.mkfifo(folder / "pipe.yaml")
    (folder / "folder.yml").mkdir()
    monkeypatch.setenv("TEACLI_PRESETS", str(folder))
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("teacli")  # the CLI's handler may be on it, not propagating to the root
    logger.addHandler(handler)
    try:
        presets = finishes(user_presets)
        assert list(finishes(user_presets)) == ["mine"]
    finally:
        logger.removeHandler(handler)
    assert list(presets) == ["mine"]
    assert len(warnings) == 2, warnings  # once per file, however often the folder is read
    text = "\n".join(warnings)
    assert "pipe.yaml: a named pipe (FIFO), not a regular file" in text and "folder.yml: a directory" in text


def test_a_dangling_link_in_a_preset_folder_is_still_an_error(tmp_path, monkeypatch):
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    monkeypatch.setenv("TEACLI_PRESETS", str(folder))
    with pytest.raises(PresetError, match="gone.yaml: cannot be read"):
        user_presets()


def test_an_unreadable_preset_folder_is_one_error(tmp_path, monkeypatch):
    folder = tmp_path / "presets"
    folder.mkdir()
    monkeypatch.setenv("TEACLI_PRESETS", str(folder))

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(PresetError, match=r"preset directory .* cannot be read \(Permission denied\)"):
        user_presets()


@needs_fifo
def test_the_cli_lists_models_with_a_fifo_in_the_preset_folder(tmp_path):
    folder = tmp_path / "presets"
    write_preset(folder / "mine.yaml", name="mine-preset")
    os.mkfifo(folder / "pipe.yaml")
    done = run_cli("list-models", cwd=tmp_path, timeout=120, TEACLI_PRESETS=str(folder))
    assert done.returncode == 0, done.stderr
    assert "mine-preset" in done.stdout
    assert "Traceback" not in done.stderr and not any(line.startswith("error:") for line in done.stderr.splitlines())


@needs_fifo
def test_the_cli_refuses_a_fifo_given_as_model_in_one_line(tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")
    line = one_error_line(run_cli("generate", PROMPT, "--model", "pipe.yaml", cwd=tmp_path))
    assert "pipe.yaml" in line and "not a file" in line


# --- call_kwargs that override what teacli sets ------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "output_type",
        "generator",
        "prompt",
        "num_inference_steps",
        "callback_on_step_end",
        "return_dict",
        "num_images_per_prompt",
        "height",
        "width",
        "guidance_scale",
        "negative_prompt",
        "true_cfg_scale",
        "num_frames",
        "image",
    ],
)
def test_call_kwargs_may_not_set_what_teacli_sets(tmp_path, key):
    value = {"output_type": "latent", "generator": 5, "return_dict": False}.get(key, 1)
    path = write_preset(tmp_path / "p.yaml", call_kwargs={"max_sequence_length": 32, key: value})
    message = refusal(path)
    assert f"field 'call_kwargs.{key}': teacli sets this itself; remove it" in message


def test_call_kwargs_hint_where_the_setting_belongs(tmp_path):
    message = refusal(write_preset(tmp_path / "p.yaml", call_kwargs={"num_inference_steps": 8}))
    assert "defaults.steps" in message and "--steps" in message


def test_other_call_kwargs_are_still_passed(tmp_path):
    kwargs = {"max_sequence_length": 32, "guidance_scale_2": 3.0, "max_area": 4096}
    assert load_preset_file(write_preset(tmp_path / "p.yaml", call_kwargs=kwargs)).call_kwargs == kwargs


CALLS: list[dict] = []


def test_every_argument_teacli_passes_to_a_pipeline_is_reserved():
    """A pipeline that takes everything: whatever runner.generate fills in, a preset may not give."""

    class Everything:
        device = torch.device("cpu")

        def __call__(
            self,
            prompt=None,
            num_inference_steps=None,
            generator=None,
            num_images_per_prompt=None,
            guidance_scale=None,
            height=None,
            width=None,
            num_frames=None,
            frame_rate=None,
            fps=None,
            negative_prompt=None,
            true_cfg_scale=None,
            image=None,
            callback_on_step_end=None,
            max_sequence_length=None,
        ):
            CALLS.append({name: value for name, value in locals().items() if name != "self" and value is not None})
            return SimpleNamespace(images=["first", "second"])

    request = GenerationRequest(
        prompt=PROMPT,
        steps=4,
        guidance=3.5,
        height=64,
        width=64,
        negative_prompt="blurry",
        true_cfg=4.0,
        image="an image",
        frames=9,
        fps=8.0,
        num_images=2,
        extra={"max_sequence_length": 32},
    )
    CALLS.clear()
    generate(Everything(), request, on_step=lambda step: None)
    set_by_teacli = set(CALLS[0]) - set(request.extra)
    assert {"prompt", "generator", "callback_on_step_end", "true_cfg_scale", "frame_rate"} <= set_by_teacli
    assert set_by_teacli <= set(RESERVED_CALL_KWARGS), set_by_teacli - set(RESERVED_CALL_KWARGS)
    assert set(PER_PROMPT_ARGUMENTS) <= set(RESERVED_CALL_KWARGS)
    assert {"output_type", "return_dict"} <= set(RESERVED_CALL_KWARGS)


def test_no_builtin_preset_sets_a_reserved_argument():
    for preset in builtin_presets().values():
        assert not set(preset.call_kwargs) & set(RESERVED_CALL_KWARGS), preset.name


# --- experts ----------------------------------------------------------------------------------------------


def test_expert_names_are_the_denoisers_the_hook_knows():
    assert EXPERT_NAMES == DENOISER_COMPONENTS


@pytest.mark.parametrize("name", ["transformer_3", "vae", "unet"])
def test_an_expert_that_is_no_denoiser_is_refused_when_read(tmp_path, name):
    message = refusal(write_preset(tmp_path / "p.yaml", experts={name: {"thresh": 0.1}}))
    assert f"field 'experts.{name}': not a denoiser TeaCache hooks" in message


def test_an_expert_the_loaded_pipeline_lacks_names_the_file_and_field(tmp_path):
    path = write_preset(tmp_path / "p.yaml", experts={"transformer_2": {"thresh": 0.1}})
    preset = load_preset_file(path)
    pipe = SimpleNamespace(transformer=make_flux_transformer())
    with pytest.raises(PresetError) as raised:
        check_loaded_transformers(preset, pipe)
    message = str(raised.value)
    assert message.startswith(f"preset {path}: field 'experts.transformer_2': ")
    assert "has no transformer_2" in message and "its denoisers: transformer" in message


def test_the_cli_names_the_file_and_field_of_an_expert_the_pipeline_lacks(runner, tmp_path):
    path = write_preset(tmp_path / "p.yaml", experts={"transformer_2": {"thresh": 0.1}})
    result = runner.invoke(app, ["generate", PROMPT, "--model", str(path), "--steps", "4", "-o", "a.png"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.stderr
    assert f"preset {path}: field 'experts.transformer_2'" in " ".join(result.stderr.split())
    assert not Path("a.png").exists()


# --- defaults and other numbers: the command line's bounds ---------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"defaults": {"steps": 99999999999999999999999}}, "defaults.steps", "must be an integer between 2 and 10000"),
        ({"defaults": {"steps": math.nan}}, "defaults.steps", "must be an integer between 2 and 10000, got nan"),
        ({"defaults": {"steps": 1}}, "defaults.steps", "must be an integer between 2 and 10000, got 1"),
        ({"defaults": {"steps": 2.5}}, "defaults.steps", "must be an integer between 2 and 10000, got 2.5"),
        ({"defaults": {"steps": "many"}}, "defaults.steps", "expected an integer, got 'many'"),
        ({"defaults": {"steps": 4, "guidance": math.nan}}, "defaults.guidance", "must be a finite number between"),
        ({"defaults": {"steps": 4, "guidance": 10**400}}, "defaults.guidance", "got an integer of 401 digits"),
        ({"defaults": {"steps": 4, "height": 10**30}}, "defaults.height", "must be an integer between 1 and 16384"),
        ({"defaults": {"steps": 4, "height": 4}}, "defaults.height", "must be >= 8, got 4"),
        ({"defaults": {"steps": 4, "width": math.inf}}, "defaults.width", "must be an integer between"),
        ({"defaults": {"steps": 4, "true_cfg": 1e9}}, "defaults.true_cfg", "between 0 and 1000"),
        ({"defaults": {"steps": 4, "frames": 10**6}}, "defaults.frames", "between 1 and 10000"),
        ({"defaults": {"steps": 4, "fps": math.nan}}, "defaults.fps", "between 0.1 and 1000"),
        ({"thresh": math.inf}, "thresh", "must be a finite number between 0 and 1e+06"),
        ({"thresh": 10**400}, "thresh", "got an integer of 401 digits"),
        ({"ret_steps": 10**30}, "ret_steps", "must be an integer between 0 and 10000"),
        ({"cutoff_steps": 0}, "cutoff_steps", "must be an integer between 1 and 10000"),
        ({"experts": {"transformer_2": {"thresh": math.nan}}}, "experts.transformer_2.thresh", "finite number"),
        ({"coefficients": [10**400, 1.0]}, "coefficients", "expected a finite number, got an integer of 401 digits"),
        ({"rel_l1_range": [0.0, 10**400]}, "rel_l1_range", "expected a finite number"),
    ],
)
def test_numbers_outside_the_command_lines_bounds_are_refused(tmp_path, changes, field, words):
    message = refusal(write_preset(tmp_path / "p.yaml", **changes))
    assert f"field '{field}': {words}" in message or (f"field '{field}'" in message and words in message), message


def test_the_bounds_let_every_builtin_preset_through():
    assert len(builtin_presets()) > 10


# --- names and values in messages are short ------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"pipeline": "x." * 100_000},
        {"name": ["a long list"] * 5000},
        {"needs_image": "y" * 100_000},
        {"z" * 100_000: 1},
        {"components": {"t" * 100_000: {"class": "A", "model": "m", "oops": 1}}},
        {"defaults": {"steps": 4, "negative_prompt": list(range(5000))}},
    ],
    ids=["long-pipeline", "long-list-name", "long-flag", "long-unknown-field", "long-component", "long-text"],
)
def test_messages_never_print_a_value_in_full(tmp_path, changes):
    refusal(write_preset(tmp_path / "p.yaml", **changes))


def test_mixed_key_types_are_a_preset_error_not_a_crash(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(preset_text() + "1: one\nzzz: two\n", encoding="utf-8")
    assert "unknown field" in refusal(path)


def test_a_component_kwargs_key_must_be_text(tmp_path):
    components = {"text_encoder": {"class": "T5EncoderModel", "model": "m", "kwargs": {1: 2}}}
    assert "field 'components.text_encoder.kwargs.1'" in refusal(
        write_preset(tmp_path / "p.yaml", components=components)
    )
