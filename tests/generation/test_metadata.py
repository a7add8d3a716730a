"""Output metadata: what a file was made with travels with it (PNG text chunks or a sidecar JSON), output
and sidecar are written together or not at all, and output names never clobber a user's file."""

import json
import os
import signal
import stat
import wave
from datetime import datetime, timedelta, timezone
from importlib.metadata import version

import numpy as np
import pytest
import torch
from PIL import Image

import teacli
from teacli.engine.apply import apply_teacache
from teacli.engine.stats import Decision, StepRecord, TeaCacheStats
from teacli.generation import media
from teacli.generation.caching import teacache_configs
from teacli.generation.media import (
    Audio,
    MediaKind,
    check_output_path,
    output_paths,
    read_metadata,
    save_output,
    sidecar_path,
    to_video,
)
from teacli.generation.metadata import FIELDS, output_metadata, parameters_line
from teacli.generation.output import OutputError, sigint_deferred, write_atomic
from teacli.generation.runner import GenerationRequest, generate
from teacli.models.catalog import builtin_presets

PROMPT = "a red circle on a blue background"


def stats_of(*decisions: Decision) -> TeaCacheStats:
    stats = TeaCacheStats()
    for step, decision in enumerate(decisions):
        stats.add(StepRecord(0, "transformer", "cond", step, None, None, 0.0, decision, 0.01))
    return stats


@pytest.fixture
def tiny_flux():
    return builtin_presets()["tiny-flux"]


@pytest.fixture
def metadata(tiny_flux):
    request = GenerationRequest.from_preset(tiny_flux, "ein Fuchs im Schnee, 狐", steps=6, seed=7)
    return output_metadata(
        request,
        tiny_flux,
        config=teacache_configs(tiny_flux, 0.3),
        stats=stats_of(Decision.FORCED, Decision.COMPUTED, Decision.CACHED, Decision.CACHED, Decision.FORCED),
        seconds=1.25,
        extra={"lora": "style.safetensors", "start": 0.1},
    )


def test_metadata_holds_the_request_the_model_the_cache_and_the_versions(metadata, tiny_flux):
    assert list(metadata)[: len(FIELDS)] == list(FIELDS)  # every standard key, in a stable order
    assert metadata["prompt"] == "ein Fuchs im Schnee, 狐" and metadata["negative_prompt"] is None
    assert (metadata["seed"], metadata["steps"], metadata["guidance"], metadata["true_cfg"]) == (7, 6, 3.5, 4.0)
    assert (metadata["height"], metadata["width"], metadata["frames"], metadata["fps"]) == (64, 64, None, None)
    assert metadata["call_kwargs"] == {"max_sequence_length": 32}
    assert (metadata["model"], metadata["model_id"]) == ("tiny-flux", "embedded:tiny-flux")
    assert (metadata["pipeline"], metadata["transformer"]) == ("FluxPipeline", "FluxTransformer2DModel")
    assert metadata["thresh"] == 0.3  # the config's, not the preset's 0.25
    assert metadata["coefficients"] == list(tiny_flux.coefficients)
    assert metadata["coefficients_source"] == tiny_flux.coefficients_source
    assert (metadata["computed"], metadata["cached"], metadata["forced"], metadata["calls"]) == (1, 2, 2, 5)
    assert metadata["seconds"] == 1.25
    assert metadata["teacli_version"] == teacli.__version__
    assert metadata["diffusers_version"] == version("diffusers")
    assert metadata["torch_version"] == version("torch")
    created = datetime.fromisoformat(metadata["created"])
    assert created.utcoffset() == timedelta(0) and abs(datetime.now(timezone.utc) - created) < timedelta(minutes=5)
    assert (metadata["lora"], metadata["start"]) == ("style.safetensors", 0.1)
    assert json.loads(json.dumps(metadata, allow_nan=False)) == metadata  # strict JSON as it is


def test_fields_replace_what_was_derived_and_mistakes_are_refused(tiny_flux):
    request = GenerationRequest.from_preset(tiny_flux, PROMPT, steps=4, seed=10)
    data = output_metadata(request, tiny_flux, index=2, coefficients_source="--coefficients", seconds=float("inf"))
    assert data["seed"] == 12  # output 2 of a batch starts from the noise of seed + 2
    assert data["coefficients_source"] == "--coefficients"
    assert data["seconds"] is None  # strict JSON has no Infinity
    assert data["thresh"] == tiny_flux.thresh and data["computed"] is None  # no config, no stats: the preset's
    with pytest.raises(TypeError, match=r"unknown fields \['sed'\]; put them in extra"):
        output_metadata(request, sed=1)
    with pytest.raises(ValueError, match=r"may not replace standard fields \['seed'\]"):
        output_metadata(request, extra={"seed": 1})


def test_a_config_per_denoiser_reports_the_first_and_the_experts():
    preset = builtin_presets()["tiny-wan22"]
    configs = teacache_configs(preset)
    assert set(configs) == {"transformer", "transformer_2"}
    data = output_metadata(preset=preset, config=configs)
    assert data["thresh"] == configs["transformer"].thresh
    assert data["experts"] == {
        "transformer_2": {
            "thresh": configs["transformer_2"].thresh,
            "coefficients": list(configs["transformer_2"].coefficients),
            "coefficients_source": configs["transformer_2"].coefficients_source,
        }
    }


def test_the_parameters_line_reads_like_other_tools(metadata):
    source = "calibrated: 12 prompts, 28 steps"
    text = parameters_line({**metadata, "negative_prompt": "blurry", "coefficients_source": source})
    prompt, negative, pairs = text.split("\n")
    assert prompt == metadata["prompt"] and negative == "Negative prompt: blurry"
    assert pairs.startswith("Steps: 6, CFG scale: 3.5, True CFG scale: 4, Seed: 7, Size: 64x64, Model: tiny-flux, ")
    assert "TeaCache thresh: 0.3, " in pairs and "TeaCache computed: 1, TeaCache cached: 2, " in pairs
    # a value holding a comma or colon is quoted, so the pairs still split
    assert 'TeaCache coefficients: "calibrated: 12 prompts, 28 steps", ' in pairs
    assert pairs.endswith(f"Version: teacli {teacli.__version__}")


def image(size=(24, 16)) -> Image.Image:
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[4:10, 6:14] = (255, 40, 0)
    return Image.fromarray(array)


def test_png_carries_the_metadata_in_text_chunks(tmp_path, metadata):
    path = tmp_path / "fox.png"
    save_output(image(), path, metadata)
    assert [p.name for p in tmp_path.iterdir()] == ["fox.png"]  # no sidecar, no temporary file
    with Image.open(path) as written:
        text = dict(written.text)
        assert np.asarray(written.convert("RGB"))[5, 7].tolist() == [255, 40, 0]
    assert json.loads(text["teacli"]) == metadata
    assert text["prompt"] == "ein Fuchs im Schnee, 狐"  # not Latin-1: an iTXt chunk keeps it whole
    assert (text["seed"], text["steps"], text["thresh"], text["cached"]) == ("7", "6", "0.3", "2")
    assert text["model"] == "tiny-flux" and text["diffusers_version"] == version("diffusers")
    assert json.loads(text["coefficients"]) == metadata["coefficients"]
    assert "negative_prompt" not in text  # unset fields get no chunk
    assert text["parameters"] == parameters_line(metadata)
    assert read_metadata(path) == metadata
    assert sidecar_path(path, MediaKind.image) is None


def moving_square(frames=4):
    array = np.zeros((frames, 16, 16, 3), dtype=np.float32)
    for index in range(frames):
        array[index, 4:8, 2 * index : 2 * index + 4] = 1.0
    return to_video(array, fps=8)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("clip.mp4", moving_square),
        ("clip.gif", moving_square),
        ("clip.webp", moving_square),
        ("sound.wav", lambda: Audio(np.sin(np.linspace(0, 30, 400, dtype=np.float32))[None], 8000)),
        ("photo.jpg", image),
        ("photo.webp", image),
    ],
)
def test_other_files_get_a_sidecar_json(tmp_path, metadata, name, make):
    output = make()
    path = tmp_path / name
    save_output(output, path, metadata)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"{name}.json"])
    assert sidecar_path(path, media.output_kind(output)) == tmp_path / f"{name}.json"
    assert json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8")) == metadata
    assert read_metadata(path) == metadata
    if name.endswith(".wav"):
        with wave.open(str(path)) as source:
            assert source.getnframes() == 400
    elif not name.endswith(".mp4"):
        with Image.open(path) as written:
            assert written.size == ((16, 16) if name.startswith("clip") else (24, 16))


def test_without_metadata_nothing_but_the_output_is_written(tmp_path):
    save_output(moving_square(), tmp_path / "clip.gif")
    save_output(image(), tmp_path / "a.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "clip.gif"]
    with pytest.raises(OutputError, match=r"clip\.gif has no teacli metadata: .* no clip\.gif\.json"):
        read_metadata(tmp_path / "clip.gif")
    with pytest.raises(OutputError, match=r"has no teacli metadata: no 'teacli' PNG text chunk"):
        read_metadata(tmp_path / "a.png")
    with pytest.raises(OutputError, match=r"missing\.png does not exist"):
        read_metadata(tmp_path / "missing.png")


def test_an_existing_sidecar_is_refused_before_generating_unless_overwrite(tmp_path):
    (tmp_path / "clip.mp4.json").write_text("{}")
    with pytest.raises(OutputError, match=r"clip\.mp4\.json \(clip\.mp4's metadata\) already exists; pass --overwrite"):
        check_output_path(tmp_path / "clip.mp4", MediaKind.video, overwrite=False)
    assert check_output_path(tmp_path / "clip.mp4", MediaKind.video, overwrite=True) == tmp_path / "clip.mp4"
    assert check_output_path(tmp_path / "clip.mp4", MediaKind.video, overwrite=False, metadata=False)
    (tmp_path / "a.png.json").write_text("{}")  # a PNG has no sidecar: someone else's file, not in the way
    assert check_output_path(tmp_path / "a.png", MediaKind.image, overwrite=False) == tmp_path / "a.png"
    (tmp_path / "s.wav.json").mkdir()
    with pytest.raises(OutputError, match=r"s\.wav\.json \(where s\.wav's metadata goes\) is a directory"):
        check_output_path(tmp_path / "s.wav", MediaKind.audio, overwrite=True)


def test_the_cli_refuses_an_existing_sidecar_before_loading(runner, tmp_path):
    from teacli.cli import app

    (tmp_path / "x.webp.json").write_text("mine")
    result = runner.invoke(app, ["generate", PROMPT, "--model", "tiny-flux", "--out", "x.webp"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "x.webp.json (x.webp's metadata) already exists" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.webp.json"]
    assert (tmp_path / "x.webp.json").read_text() == "mine"


class FailingImage:
    """Writes half a file, then fails, as a full disk would."""

    def save(self, path, format=None, **options):
        with open(path, "wb") as sink:
            sink.write(b"\x89PNG\r\n\x1a\n half")
        raise OSError(28, "No space left on device")


def test_a_failed_write_leaves_nothing_behind_and_the_old_file_intact(tmp_path, metadata):
    with pytest.raises(OSError, match="No space left"):
        save_output(FailingImage(), tmp_path / "new.png", metadata)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "keep.jpg").write_bytes(b"the user's photo")
    with pytest.raises(OSError, match="No space left"):
        save_output(FailingImage(), tmp_path / "keep.jpg", metadata)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.jpg"]
    assert (tmp_path / "keep.jpg").read_bytes() == b"the user's photo"


def test_a_failed_sidecar_commits_no_output_either(tmp_path, metadata, monkeypatch):
    def broken(_data):
        def write(path):
            path.write_text('{"half": ')
            raise KeyboardInterrupt

        return write

    monkeypatch.setattr(media, "json_writer", broken)
    (tmp_path / "clip.gif").write_bytes(b"old clip")
    with pytest.raises(KeyboardInterrupt):
        save_output(moving_square(), tmp_path / "clip.gif", metadata)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.gif"]
    assert (tmp_path / "clip.gif").read_bytes() == b"old clip"


def test_without_overwrite_a_file_that_appeared_meanwhile_is_kept(tmp_path, metadata):
    """Checked free before generating, taken when writing: the user's file wins and the pair is not split."""
    check_output_path(tmp_path / "clip.gif", MediaKind.video, overwrite=False)
    (tmp_path / "clip.gif.json").write_text("theirs")
    with pytest.raises(OutputError, match=r"clip\.gif\.json already exists; pass --overwrite"):
        save_output(moving_square(), tmp_path / "clip.gif", metadata, overwrite=False)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.gif.json"]  # clip.gif, placed first, taken back
    assert (tmp_path / "clip.gif.json").read_text() == "theirs"
    save_output(moving_square(), tmp_path / "clip.gif", metadata, overwrite=True)
    assert read_metadata(tmp_path / "clip.gif") == metadata


def test_written_files_have_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "new.txt", lambda path: path.write_text("x"))
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644  # not mkstemp's 0o600
        os.chmod(tmp_path / "new.txt", 0o640)
        write_atomic(tmp_path / "new.txt", lambda path: path.write_text("y"), overwrite=True)
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640  # a replaced file keeps its mode
    finally:
        os.umask(umask)


def test_ctrl_c_while_committing_waits_until_every_file_is_in_place():
    reached = []
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("after the signal")
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is previous


def names(paths):
    return [path.name for path in paths]


def test_one_output_keeps_the_given_name_or_takes_the_first_free_number(tmp_path):
    assert output_paths(tmp_path / "cat.png", 1, MediaKind.image, tmp_path, False) == [tmp_path / "cat.png"]
    (tmp_path / "teacli-0001.png").touch()
    (tmp_path / "teacli-0002.mp4.json").touch()  # its video is gone, its metadata still there
    assert names(output_paths(None, 1, MediaKind.image, tmp_path, False)) == ["teacli-0002.png"]
    assert names(output_paths(None, 1, MediaKind.video, tmp_path, False, ".mp4")) == ["teacli-0001.mp4"]
    (tmp_path / "teacli-0001.mp4").touch()
    assert names(output_paths(None, 1, MediaKind.video, tmp_path, False, ".mp4")) == ["teacli-0003.mp4"]
    with pytest.raises(OutputError, match=r"teacli-0001\.png already exists; pass --overwrite"):
        output_paths(tmp_path / "teacli-0001.png", 1, MediaKind.image, tmp_path, False)


def test_several_outputs_number_the_given_name(tmp_path):
    wanted = ["cat-1.png", "cat-2.png", "cat-3.png"]
    assert names(output_paths(tmp_path / "cat.png", 3, MediaKind.image, tmp_path, False)) == wanted
    (tmp_path / "cat-2.png").write_bytes(b"mine")
    with pytest.raises(OutputError, match=r"cat-2\.png already exists; pass --overwrite"):
        output_paths(tmp_path / "cat.png", 3, MediaKind.image, tmp_path, False)
    assert names(output_paths(tmp_path / "cat.png", 3, MediaKind.image, tmp_path, True)) == wanted
    (tmp_path / "dog-2.gif.json").touch()
    with pytest.raises(OutputError, match=r"dog-2\.gif\.json \(dog-2\.gif's metadata\) already exists"):
        output_paths(tmp_path / "dog.gif", 2, MediaKind.video, tmp_path, False)
    with pytest.raises(OutputError, match="this model makes videos: cannot write one as '.png'"):
        output_paths(tmp_path / "cat.png", 2, MediaKind.video, tmp_path, True)
    assert (tmp_path / "cat-2.png").read_bytes() == b"mine"


def test_several_numbered_outputs_skip_taken_names(tmp_path):
    for taken in ("teacli-0002.png", "teacli-0004.png"):
        (tmp_path / taken).touch()
    paths = output_paths(None, 3, MediaKind.image, tmp_path, False)
    assert names(paths) == ["teacli-0001.png", "teacli-0003.png", "teacli-0005.png"]
    assert all(path.parent == tmp_path for path in paths)
    with pytest.raises(OutputError, match="--num-images must be at least 1, got 0"):
        output_paths(None, 0, MediaKind.image, tmp_path, False)
    with pytest.raises(OutputError, match="does not exist"):
        output_paths(None, 2, MediaKind.image, tmp_path / "missing", False)


def test_a_real_generation_stores_what_teacache_did(tiny_flux_pipe, tiny_flux, tmp_path):
    """The counts in the file are the hook's own records of that run."""
    request = GenerationRequest.from_preset(tiny_flux, PROMPT, steps=6)
    config = teacache_configs(tiny_flux, 0.4)
    handle = apply_teacache(tiny_flux_pipe, config)
    try:
        with torch.no_grad():
            result = generate(tiny_flux_pipe, request)
    finally:
        handle.remove()
    data = output_metadata(
        request, tiny_flux, config=config, stats=handle.stats, seconds=result.seconds, pipe=tiny_flux_pipe
    )
    save_output(result.output, tmp_path / "run.png", data)
    stored = read_metadata(tmp_path / "run.png")
    totals = handle.stats.totals
    assert (stored["computed"], stored["cached"], stored["forced"]) == (totals.computed, totals.cached, totals.forced)
    assert stored["calls"] == 6 and stored["cached"] > 0
    assert (stored["pipeline"], stored["transformer"]) == ("FluxPipeline", "FluxTransformer2DModel")
    assert stored["seconds"] == pytest.approx(result.seconds)
