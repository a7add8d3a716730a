"""A damaged weights file is called damaged, by name, never a reason to turn pickle on; a Ctrl-C while loading
stays a Ctrl-C. Damaged copies of tiny-flux are made in tmp_path; the session fixture itself is never touched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from teacli.models.catalog import builtin_presets, parse_preset, preset_to_dict
from teacli.models.loading import ModelError, load_pipeline, resolve_preset
from teacli.models.lora import load_lora, locate_lora
from teacli.models.weights import safetensors_problem

CPU = torch.device("cpu")
PROMPT = "a red circle"
DAMAGED = "is damaged (truncated or not a safetensors file: "
AGAIN = "); download it again"
PICKLE_ADVICE = ("allow-pickle", "allow_pickle", "pickle files")  # (tmp_path names may hold the word pickle itself)
WEIGHTS = {
    "transformer": "transformer/diffusion_pytorch_model.safetensors",
    "vae": "vae/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
    "text_encoder_2": "text_encoder_2/model.safetensors",
}


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def header_cut(file: Path) -> None:  # a download that stopped inside the JSON header
    file.write_bytes(file.read_bytes()[:40])


def zero(file: Path) -> None:
    file.write_bytes(b"")


def garbage(file: Path) -> None:
    file.write_bytes(b"\x89PNG not weights at all" * 40)


def lfs_pointer(file: Path) -> None:  # a clone without git-lfs
    file.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 540440\n")


def extra_bytes(file: Path) -> None:
    file.write_bytes(file.read_bytes() + b"\0" * 16)


DAMAGES = {f.__name__: f for f in (truncate, header_cut, zero, garbage, lfs_pointer, extra_bytes)}


def damaged_copy(source: Path, target: Path, relative: str, damage) -> Path:
    shutil.copytree(source, target)
    damage(target / relative)
    return target / relative


def assert_damaged(message: str, file: Path, prefix: str = "") -> None:
    assert message.startswith(f"{prefix}{file} {DAMAGED}") and message.endswith(AGAIN), message
    assert not any(advice in message for advice in PICKLE_ADVICE), message
    assert "\n" not in message and len(message) < len(str(file)) + 300, message


def never_loads(monkeypatch):
    """Make any weight loading fail the test: the damage must be found from the headers first."""
    from diffusers import FluxPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained ran on a damaged folder")

    monkeypatch.setattr(FluxPipeline, "from_pretrained", classmethod(refuse))


# --- the header check ---------------------------------------------------------------------------------------


def test_safetensors_problem_reads_the_header_and_length(tiny_flux_dir, tmp_path):
    good = tiny_flux_dir / WEIGHTS["transformer"]
    assert safetensors_problem(good) is None
    size = good.stat().st_size
    reasons = {}
    for name, damage in DAMAGES.items():
        copy = tmp_path / f"{name}.safetensors"
        shutil.copy(good, copy)
        damage(copy)
        reasons[name] = safetensors_problem(copy)
    assert reasons["truncate"] == f"only {size // 2} of its {size} bytes"
    assert reasons["zero"] == "empty file"
    assert (
        reasons["header_cut"].startswith("header length ")
        and "does not fit in the file's 40 bytes" in reasons["header_cut"]
    )
    assert reasons["garbage"].startswith("header length ")
    assert reasons["lfs_pointer"] == "a git-lfs pointer, not the weights; run git lfs pull"
    assert reasons["extra_bytes"] == "16 bytes more than its header describes"
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x02\0\0")
    assert safetensors_problem(tiny) == "only 3 bytes"
    not_json = tmp_path / "not-json.safetensors"
    not_json.write_bytes((4).to_bytes(8, "little") + b"\xff{[}")
    assert safetensors_problem(not_json) == "header is not JSON"
    bad_entry = tmp_path / "bad-entry.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, "x"]}}).encode()
    bad_entry.write_bytes(len(header).to_bytes(8, "little") + header)
    assert safetensors_problem(bad_entry) == "header has a malformed tensor entry"
    assert safetensors_problem(tmp_path / "missing.safetensors").startswith("cannot be read: ")


# --- a pipeline folder --------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("component", sorted(WEIGHTS))
def test_a_damaged_component_file_is_named_before_anything_loads(
    tiny_flux_dir, tmp_path, monkeypatch, component, damage
):
    file = damaged_copy(tiny_flux_dir, tmp_path / "model", WEIGHTS[component], DAMAGES[damage])
    preset = resolve_preset(str(tmp_path / "model"))
    never_loads(monkeypatch)
    for allow_pickle in (False, True):  # damaged is damaged, whatever may be loaded
        with pytest.raises(ModelError) as refused:
            load_pipeline(preset, CPU, torch.float32, allow_pickle=allow_pickle)
        assert_damaged(str(refused.value), file)


def test_damage_beside_pickle_weights_is_not_called_pickle_only(pickled_flux, tiny_flux_dir, tmp_path):
    """A folder with a .bin and a damaged .safetensors: the fix is downloading again, not --allow-pickle."""
    model = tmp_path / "model"
    shutil.copytree(pickled_flux, model)
    file = model / WEIGHTS["transformer"]
    shutil.copy(tiny_flux_dir / WEIGHTS["transformer"], file)
    truncate(file)
    with pytest.raises(ModelError) as refused:
        load_pipeline(resolve_preset(str(model)), CPU, torch.float32)
    assert_damaged(str(refused.value), file)


@pytest.fixture(scope="module")
def sharded_flux(tiny_flux_dir, tmp_path_factory) -> Path:
    """tiny-flux with its transformer and first text encoder saved in three shards each."""
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextModel

    directory = tmp_path_factory.mktemp("sharded") / "tiny-flux-sharded"
    shutil.copytree(tiny_flux_dir, directory)
    for name, cls, size in (("transformer", FluxTransformer2DModel, "200KB"), ("text_encoder", CLIPTextModel, "50KB")):
        shutil.rmtree(directory / name)
        cls.from_pretrained(tiny_flux_dir, subfolder=name).save_pretrained(directory / name, max_shard_size=size)
    assert len(list((directory / "transformer").glob("*-of-*.safetensors"))) > 1
    assert len(list((directory / "text_encoder").glob("*-of-*.safetensors"))) > 1
    return directory


@pytest.mark.parametrize("component", ["transformer", "text_encoder"])
def test_a_sharded_checkpoint_names_its_damaged_missing_shard_or_index(sharded_flux, tmp_path, component):
    pipe = load_pipeline(resolve_preset(str(sharded_flux)), CPU, torch.float32)  # the shards are whole
    assert pipe.transformer is not None
    shard = sorted((sharded_flux / component).glob("*-of-*.safetensors"))[1].name
    index = next((sharded_flux / component).glob("*.safetensors.index.json")).name

    def refusal(name: str, change) -> str:
        model = tmp_path / name
        shutil.copytree(sharded_flux, model)
        change(model / component)
        with pytest.raises(ModelError) as refused:
            load_pipeline(resolve_preset(str(model)), CPU, torch.float32)
        message = str(refused.value)
        assert not any(advice in message for advice in PICKLE_ADVICE) and "\n" not in message, message
        return message

    assert_damaged(refusal("cut", lambda folder: truncate(folder / shard)), tmp_path / "cut" / component / shard)
    missing = refusal("missing", lambda folder: (folder / shard).unlink())
    assert missing == f"{tmp_path / 'missing' / component / shard} is missing (listed in {index}); download it again"
    broken = refusal("index", lambda folder: (folder / index).write_text('{"weight_map": {"a.weight": "x'))
    assert broken.startswith(f"{tmp_path / 'index' / component / index} is damaged (not a valid shard index: ")
    assert broken.endswith(AGAIN)


def test_a_component_without_weights_is_not_called_pickle_only(tiny_flux_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_flux_dir, model)
    (model / WEIGHTS["transformer"]).unlink()
    with pytest.raises(ModelError) as refused:
        load_pipeline(resolve_preset(str(model)), CPU, torch.float32)
    message = str(refused.value)
    assert message.startswith(f"could not load {model} with FluxPipeline: ") and "diffusion_pytorch_model" in message
    assert not any(advice in message for advice in PICKLE_ADVICE) and "\n" not in message


def test_a_preset_component_from_a_damaged_folder_is_named(tiny_flux_dir, tmp_path, monkeypatch):
    source = tmp_path / "elsewhere"
    file = damaged_copy(tiny_flux_dir, source, WEIGHTS["transformer"], zero)
    component = {"class": "FluxTransformer2DModel", "model": str(source), "subfolder": "transformer"}
    data = preset_to_dict(builtin_presets()["tiny-flux"]) | {"components": {"transformer": component}}
    preset = parse_preset(data, "inline.yaml")
    never_loads(monkeypatch)
    with pytest.raises(ModelError) as refused:
        load_pipeline(preset, CPU, torch.float32)
    assert_damaged(str(refused.value), file)


def test_the_loaders_own_error_about_a_damaged_file_is_classified_by_the_file(tiny_flux_dir, tmp_path, monkeypatch):
    """Without the header check (a file damaged while loading, a hub download), the file diffusers names is
    checked on disk: damaged, never pickle advice, even though its message says "safetensors"."""
    import teacli.models.loading

    file = damaged_copy(tiny_flux_dir, tmp_path / "model", WEIGHTS["vae"], truncate)
    monkeypatch.setattr(teacli.models.loading, "check_weight_files", lambda folder: None)
    with pytest.raises(ModelError) as refused:
        load_pipeline(resolve_preset(str(tmp_path / "model")), CPU, torch.float32)
    assert_damaged(str(refused.value), file)


def test_a_long_library_reason_is_cut_short(tiny_flux_dir, monkeypatch):
    from diffusers import FluxPipeline

    def fail(*args, **kwargs):
        raise ValueError("x" * 5000 + "\nsecond line")

    monkeypatch.setattr(FluxPipeline, "from_pretrained", classmethod(fail))
    with pytest.raises(ModelError) as refused:
        load_pipeline(resolve_preset(str(tiny_flux_dir)), CPU, torch.float32)
    message = str(refused.value)
    assert message.startswith(f"could not load {tiny_flux_dir} with FluxPipeline: xxx") and message.endswith("x…")
    assert len(message) < len(str(tiny_flux_dir)) + 250 and "second line" not in message


# --- Ctrl-C ------------------------------------------------------------------------------------------------


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler (KeyboardInterrupt), as the CLI runs with it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def patch_loader(monkeypatch, behaviour):
    from diffusers import FluxPipeline

    monkeypatch.setattr(FluxPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: behaviour()))


def test_a_keyboard_interrupt_while_loading_propagates_unchanged(tiny_flux_dir, monkeypatch, default_sigint):
    interrupt = KeyboardInterrupt()

    def ctrl_c():
        raise interrupt

    patch_loader(monkeypatch, ctrl_c)
    with pytest.raises(KeyboardInterrupt) as raised:
        load_pipeline(resolve_preset(str(tiny_flux_dir)), CPU, torch.float32)
    assert raised.value is interrupt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was


def test_an_error_raised_while_an_interrupt_unwinds_is_still_an_interrupt(tiny_flux_dir, monkeypatch):
    file = tiny_flux_dir / WEIGHTS["transformer"]

    def cleanup_fails():
        try:
            raise KeyboardInterrupt
        finally:  # a library's cleanup failing on the half-read file, while the Ctrl-C unwinds
            raise OSError(f"Unable to load weights from checkpoint file for '{file}' at '{file}'. safetensors")

    patch_loader(monkeypatch, cleanup_fails)
    with pytest.raises(KeyboardInterrupt):
        load_pipeline(resolve_preset(str(tiny_flux_dir)), CPU, torch.float32)


def test_a_ctrl_c_a_library_reports_as_another_error_is_still_an_interrupt(tiny_flux_dir, monkeypatch, default_sigint):
    """A real SIGINT that the loader swallows and reports as a "safetensors" OSError (with no trace of the
    KeyboardInterrupt left on it): teacli noticed the signal, so it is an interrupt, not a broken model."""
    seen = []

    def swallowed():
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            seen.append("interrupted")
        raise OSError("Could not find the necessary `safetensors` weights in {'transformer/x.bin'} (variant=None)")

    patch_loader(monkeypatch, swallowed)
    with pytest.raises(KeyboardInterrupt):
        load_pipeline(resolve_preset(str(tiny_flux_dir)), CPU, torch.float32)
    assert seen == ["interrupted"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_ctrl_c_the_same_error_is_a_model_error(tiny_flux_dir, monkeypatch, default_sigint):
    def plain():
        raise OSError("Could not find the necessary `safetensors` weights in {'transformer/x.bin'} (variant=None)")

    patch_loader(monkeypatch, plain)
    with pytest.raises(ModelError) as refused:
        load_pipeline(resolve_preset(str(tiny_flux_dir)), CPU, torch.float32)
    # The folder holds safetensors for every component: no pickle advice, whatever the message says.
    assert str(refused.value).startswith(f"could not load {tiny_flux_dir} with FluxPipeline: Could not find")
    assert "allow-pickle" not in str(refused.value) and "allow_pickle" not in str(refused.value)


# --- LoRA --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory) -> Path:
    """A small valid LoRA for tiny-flux's transformer (pytorch_lora_weights.safetensors)."""
    pytest.importorskip("peft")
    from support import lora_state_dict, save_lora

    directory = tmp_path_factory.mktemp("lora-good")
    return save_lora(directory, lora_state_dict())


@pytest.fixture(scope="module")
def lora_pipe(teacli_cache):
    """tiny-flux for the LoRA tests, never the session's shared pipeline: a LoRA changes the one it meets."""
    return load_pipeline(builtin_presets()["tiny-flux"], CPU, torch.float32)


@pytest.fixture
def damaged_lora(lora_file, tmp_path):
    def make(damage, name: str = "pytorch_lora_weights.safetensors") -> Path:
        folder = tmp_path / f"lora-{damage.__name__}"
        folder.mkdir(exist_ok=True)
        file = folder / name
        shutil.copy(lora_file, file)
        damage(file)
        return file

    return make


@pytest.mark.parametrize("damage", ["truncate", "header_cut", "zero", "garbage", "lfs_pointer"])
def test_a_damaged_lora_file_is_named_as_damaged(lora_pipe, damaged_lora, damage):
    file = damaged_lora(DAMAGES[damage])
    for path in (file, file.parent):  # the file, or the folder it is in
        for allow_pickle in (False, True):
            with pytest.raises(ModelError) as refused:
                load_lora(lora_pipe, str(path), allow_pickle=allow_pickle)
            assert_damaged(str(refused.value), file, prefix="LoRA ")
            with pytest.raises(ModelError):  # the CLI's check before loading the model says the same
                locate_lora(str(path), allow_pickle=allow_pickle, offline=False)
    assert lora_pipe.get_list_adapters() in ({}, {"transformer": []})


def test_a_damaged_lora_beside_a_pickle_copy_is_damaged_not_pickle_only(lora_pipe, damaged_lora):
    file = damaged_lora(truncate)
    torch.save({"x": torch.zeros(1)}, file.parent / "pytorch_lora_weights.bin")
    with pytest.raises(ModelError) as refused:
        load_lora(lora_pipe, str(file.parent))
    assert_damaged(str(refused.value), file, prefix="LoRA ")


@pytest.mark.parametrize("contents", [[], ["README.md"], ["notes.txt", "config.json"]])
def test_a_lora_folder_without_weights_says_so(lora_pipe, tmp_path, contents):
    folder = tmp_path / "empty-lora"
    folder.mkdir()
    for name in contents:
        (folder / name).write_text("{}")
    for allow_pickle in (False, True):
        with pytest.raises(ModelError) as refused:
            load_lora(lora_pipe, str(folder), allow_pickle=allow_pickle)
        assert str(refused.value) == (
            f"LoRA folder {folder} holds no weights file (.safetensors); pass the LoRA's .safetensors file or the "
            "folder it is in"
        )


def test_a_lora_folder_with_only_pickle_files_keeps_the_pickle_advice(lora_pipe, tmp_path):
    folder = tmp_path / "pickle-lora"
    folder.mkdir()
    torch.save({"x": torch.zeros(1)}, folder / "pytorch_lora_weights.bin")
    with pytest.raises(ModelError, match=r"has no safetensors weights \(only pickle files.*allow_pickle") as refused:
        load_lora(lora_pipe, str(folder))
    assert refused.value.worded({"allow_pickle": "--allow-pickle"}).endswith("pass --allow-pickle only if you trust it")


def test_a_safetensors_error_from_the_lora_loader_is_damage_not_pickle(lora_pipe, lora_file, monkeypatch):
    from safetensors import SafetensorError

    def fail(*args, **kwargs):
        raise SafetensorError("Error while deserializing header: incomplete metadata, file not fully covered")

    monkeypatch.setattr(lora_pipe, "load_lora_weights", fail)
    with pytest.raises(ModelError) as refused:
        load_lora(lora_pipe, str(lora_file))
    assert str(refused.value) == (
        f"LoRA {lora_file} {DAMAGED}Error while deserializing header: incomplete metadata, file not fully covered"
        f"{AGAIN}"
    )


def test_a_lora_loader_error_mentioning_safetensors_is_not_pickle_advice(lora_pipe, lora_file, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("Error no file named pytorch_lora_weights.safetensors found in directory " + "d" * 3000)

    monkeypatch.setattr(lora_pipe, "load_lora_weights", fail)
    with pytest.raises(ModelError) as refused:
        load_lora(lora_pipe, str(lora_file))
    message = str(refused.value)
    assert message.startswith(f"could not read LoRA {lora_file}: Error no file named")
    assert not any(advice in message for advice in PICKLE_ADVICE)
    assert len(message) < len(str(lora_file)) + 250 and message.endswith("…")


@pytest.mark.parametrize("how", ["plain", "while-unwinding"])
def test_a_ctrl_c_while_loading_a_lora_propagates_and_leaves_no_adapter(teacli_cache, lora_file, monkeypatch, how):
    pipe = load_pipeline(builtin_presets()["tiny-flux"], CPU, torch.float32)  # this one gets a LoRA
    real = pipe.load_lora_weights

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)  # the adapter is in place when the Ctrl-C comes
        if how == "plain":
            raise KeyboardInterrupt
        try:
            raise KeyboardInterrupt
        finally:
            raise OSError("safetensors file could not be closed")

    monkeypatch.setattr(pipe, "load_lora_weights", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_lora(pipe, str(lora_file))
    assert not any(pipe.get_list_adapters().values())


# --- the command line ---------------------------------------------------------------------------------------


def run_cli(args: list[str], cwd: Path, code: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="400", PYTHONUNBUFFERED="1")
    assert env.get("TEACLI_CACHE_DIR")  # from the teacli_cache fixture: tiny-flux is built there once
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "teacli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def assert_damaged_cli(done: subprocess.CompletedProcess, file: Path, tmp_path: Path, *, whole_stderr: bool):
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], done.stderr
    if whole_stderr:  # besides the error, only the stage a log shows (stderr is no terminal here): no chatter
        assert all(line.startswith("INFO     loading ") for line in lines if line not in errors), done.stderr
    message = errors[0]
    assert str(file) in message and "damaged" in message and "truncated" in message, message
    assert not any(advice in done.stderr for advice in PICKLE_ADVICE), message
    assert not (tmp_path / "x.png").exists() and not list(tmp_path.glob(".x.png*"))


def write_preset(path: Path, model: Path) -> Path:
    data = preset_to_dict(builtin_presets()["tiny-flux"]) | {"model": str(model), "name": "damaged-copy"}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_cli_truncated_transformer_is_one_line_saying_damaged(teacli_cache, tiny_flux_dir, tmp_path):
    file = damaged_copy(tiny_flux_dir, tmp_path / "model", WEIGHTS["transformer"], truncate)
    args = ["generate", PROMPT, "--model", str(tmp_path / "model"), "--steps", "2", "--out", str(tmp_path / "x.png")]
    done = run_cli(args, tmp_path)
    # Before the error: only the borrowed-coefficients notice and the 2-step warning.
    assert_damaged_cli(done, file, tmp_path, whole_stderr=False)


def test_cli_empty_text_encoder_through_a_preset_is_the_only_line(teacli_cache, tiny_flux_dir, tmp_path):
    file = damaged_copy(tiny_flux_dir, tmp_path / "model", WEIGHTS["text_encoder"], zero)
    preset = write_preset(tmp_path / "damaged.yaml", tmp_path / "model")
    done = run_cli(
        ["generate", PROMPT, "--model", str(preset), "--steps", "5", "--out", str(tmp_path / "x.png")], tmp_path
    )
    assert_damaged_cli(done, file, tmp_path, whole_stderr=True)
    assert "empty file" in done.stderr


def test_cli_damaged_lora_is_one_line_before_the_model_loads(teacli_cache, damaged_lora, tmp_path):
    file = damaged_lora(truncate)
    args = ["generate", PROMPT, "-m", "tiny-flux", "--lora", str(file), "--steps", "5", "-o", str(tmp_path / "x.png")]
    done = run_cli(args, tmp_path)
    assert_damaged_cli(done, file, tmp_path, whole_stderr=True)
    assert done.stderr.startswith(f"error: LoRA {file} is damaged")


# Sends this process a real SIGINT from inside the pipeline's from_pretrained, which then (as a library might)
# swallows the KeyboardInterrupt and raises an OSError that mentions safetensors.
INTERRUPTED_LOAD = r"""
import signal, sys
from teacli.signals import import_libraries

import_libraries()  # as the CLI does, before diffusers' imports (and torchao's, when installed) speak
from diffusers import FluxPipeline

def from_pretrained(cls, *args, **kwargs):
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        pass
    raise OSError("Unable to load weights from checkpoint file for 'x.safetensors' at 'x.safetensors'.")

FluxPipeline.from_pretrained = classmethod(from_pretrained)
sys.argv = ["teacli", *sys.argv[1:]]
from teacli.cli import main

main()
"""


def test_cli_ctrl_c_while_loading_exits_130_not_a_model_error(teacli_cache, tmp_path):
    args = ["generate", PROMPT, "-m", "tiny-flux", "--steps", "5", "--out", str(tmp_path / "x.png")]
    done = run_cli(args, tmp_path, code=INTERRUPTED_LOAD)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("INFO ")]
    assert lines == ["error: interrupted; nothing was written"], done.stderr
    assert list(tmp_path.iterdir()) == []
