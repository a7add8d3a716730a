"""Editing pipelines take --image (Kontext on the tiny FLUX weights); bad --image and options a pipeline lacks."""

import pytest
from PIL import Image
from support import generate_and_check
from typer.testing import CliRunner

from teacli.cli import app


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "input.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    return path


def test_kontext_edits_the_input_image_with_caching(teacli_cache, monkeypatch, tmp_path, picture):
    stats, counts = generate_and_check(
        monkeypatch, tmp_path, "tiny-flux-kontext", "--image", str(picture), steps=10, thresh=0.3, branches={"default"}
    )
    assert stats.totals.cached > 0
    assert Image.open(tmp_path / "tiny-flux-kontext.png").size == (64, 64)


def test_the_input_image_changes_the_output(teacli_cache, monkeypatch, tmp_path):
    outputs = []
    for colour in ((200, 30, 30), (30, 30, 200)):
        source = tmp_path / f"in-{colour[0]}.png"
        Image.new("RGB", (64, 64), colour).save(source)
        out = tmp_path / f"out-{colour[0]}.png"
        args = ["generate", "x", "-m", "tiny-flux-kontext", "--image", str(source), "--steps", "3", "-o", str(out)]
        result = CliRunner().invoke(app, args + ["--device", "cpu"])
        assert result.exit_code == 0, result.output
        outputs.append(Image.open(out).tobytes())
    assert outputs[0] != outputs[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "tiny-flux-kontext"], "edits an input image: pass --image PATH"),
        (["-m", "tiny-flux-kontext", "--image", "missing.png"], "--image missing.png does not exist"),
        (["-m", "tiny-flux-kontext", "--image", "not-an-image.png"], "not an image Pillow can read"),
        (["-m", "tiny-flux", "--image", "input.png"], "(FluxPipeline) takes no image; drop --image"),
        # Options a pipeline has no argument for are refused before loading, not silently dropped.
        (["-m", "tiny-flux2-klein", "--negative-prompt", "x"], "takes no negative_prompt; drop --negative-prompt"),
        (["-m", "hunyuanimage-2.1", "--guidance", "3"], "takes no guidance_scale; drop --guidance"),
    ],
)
def test_bad_image_or_option_is_one_line_writing_nothing(teacli_cache, monkeypatch, tmp_path, picture, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-an-image.png").write_text("hello")
    result = CliRunner().invoke(app, ["generate", "x", "-o", "out.png", *args])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.png").exists()
