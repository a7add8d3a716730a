"""teacli-shapes, the trained model teacli ships: its files, its pictures, its preset, its default role."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from teacli.demo.checker import read, score
from teacli.demo.evaluate import recommended_threshold, run_sweep, strip
from teacli.demo.shapes import evaluation_captions
from teacli.models.catalog import builtin_presets
from teacli.models.embedded import embedded_model_path
from teacli.models.loading import resolve_preset

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def preset(shapes_preset):
    return shapes_preset


@pytest.fixture(scope="module")
def pipe(shapes_pipe):
    return shapes_pipe


def test_ships_safetensors_only_and_under_20_mb():
    directory = embedded_model_path("teacli-shapes")
    files = [path for path in directory.rglob("*") if path.is_file()]
    weights = [path for path in files if path.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}]
    assert weights and all(path.suffix == ".safetensors" for path in weights)
    assert sum(path.stat().st_size for path in files) <= 20 * 1024 * 1024
    assert json.loads((directory / "model_index.json").read_text())["_class_name"] == "FluxPipeline"


def test_is_the_default_model_and_not_a_test_model(preset):
    assert resolve_preset(None).name == "teacli-shapes"
    assert not preset.is_test_model and builtin_presets()["tiny-flux"].is_test_model


def test_uncached_pictures_clear_the_bar_on_the_first_evaluation_captions(pipe, preset):
    from teacli.generation.runner import GenerationRequest, generate

    captions = evaluation_captions(12)
    readings = [
        read(generate(pipe, GenerationRequest.from_preset(preset, str(caption), seed=seed)).output)
        for seed, caption in enumerate(captions)
    ]
    assert score(zip(captions, readings)).passes()


def test_default_generate_writes_a_recognisable_picture(runner, tmp_path, monkeypatch):
    from teacli.cli import app

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["generate", "a red circle on a blue background", "--device", "cpu", "-o", "out.png"])
    assert result.exit_code == 0, result.output
    assert "teacli-shapes" in result.output
    reading = read(Image.open(tmp_path / "out.png"))
    assert (reading.background, reading.color, reading.shape) == ("blue", "red", "circle")


def test_preset_carries_a_calibrated_fit_and_the_swept_threshold(preset):
    assert preset.coefficients_kind == "calibrated" and len(preset.coefficients) == 5
    assert preset.rel_l1_range is not None
    calibration = preset.calibration
    assert calibration["from_preset"] == "teacli-shapes" and calibration["steps"] == preset.defaults.steps
    assert calibration["r2"] > 0.5 and set(calibration["branches"]) == {"cond", "uncond"}
    sweep = json.loads((DOCS / "teacli-shapes-sweep.json").read_text())
    assert sweep["recommended"] == preset.thresh and sweep["captions"] == 100 and sweep["steps"] == 28
    uncached, chosen = sweep["rows"][0], next(r for r in sweep["rows"] if r["thresh"] == preset.thresh)
    for key in ("score_background", "score_color", "score_shape"):
        assert uncached[key] - chosen[key] <= 2
    assert uncached["score_background"] >= 95 and uncached["score_color"] >= 90 and uncached["score_shape"] >= 80


def test_transformer_fidelity_with_the_trained_weights(pipe):
    from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

    def inputs(seed, t):
        generator = torch.Generator().manual_seed(seed)
        return dict(
            hidden_states=torch.randn(1, 16, pipe.transformer.config.in_channels, generator=generator),
            encoder_hidden_states=torch.randn(1, 16, 32, generator=generator),
            pooled_projections=torch.randn(1, 32, generator=generator),
            timestep=torch.tensor([t]),
            img_ids=torch.zeros(16, 3),
            txt_ids=torch.zeros(16, 3),
        )

    calls = [("cond", inputs(1, 0.9)), ("uncond", inputs(2, 0.9)), (None, inputs(3, 0.4))]
    assert_caching_off_matches_unhooked(pipe.transformer, calls)
    assert_cached_call_is_input_plus_residual(pipe.transformer, inputs(1, 0.9), inputs(2, 0.8))


def test_sweep_counts_quality_and_strip(pipe, preset):
    captions = evaluation_captions(3)
    rows = run_sweep(pipe, preset, captions, [preset.thresh, 5.0], steps=10)
    uncached, default, bold = rows
    # True CFG by default: two calls a step, cond and uncond, each with its own state.
    assert uncached.computed == uncached.calls == 60 and uncached.psnr is None
    assert default.calls == bold.calls == 60 and bold.computed < default.computed <= 60
    assert bold.computed == 3 * 2 * 2  # every step but the forced first and last is cached, per branch
    assert bold.psnr < default.psnr and 0 < bold.ssim <= default.ssim <= 1
    assert recommended_threshold(rows, tolerance=100) == 5.0
    sheet = strip(rows, columns=3)
    assert sheet.size == (120 + 3 * 128, 3 * 128)


def test_caption_outside_the_grammar_still_generates(pipe, preset):
    from teacli.generation.runner import GenerationRequest, generate

    image = generate(pipe, GenerationRequest.from_preset(preset, "a cat", steps=4)).output
    assert image.size == (64, 64)
