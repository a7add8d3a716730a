"""Video and audio outputs: the kind follows the pipeline, files read back as written, no half files."""

import wave

import numpy as np
import pytest
from diffusers import FluxPipeline, StableAudioPipeline, WanPipeline
from PIL import Image
from typer.testing import CliRunner

from teacli.cli import app
from teacli.generation import media
from teacli.generation.media import (
    Audio,
    MediaKind,
    Video,
    check_output_path,
    media_kind,
    save_audio,
    save_video,
    to_video,
)
from teacli.generation.output import OutputError


def test_the_kind_follows_the_pipeline_signature():
    assert media_kind(FluxPipeline) is MediaKind.image
    assert media_kind(WanPipeline) is MediaKind.video
    assert media_kind(StableAudioPipeline) is MediaKind.audio


def moving_square(frames: int = 5, size: int = 32) -> Video:
    array = np.zeros((frames, size, size, 3), dtype=np.float32)
    for index in range(frames):
        array[index, 8:16, 4 * index : 4 * index + 8] = (1.0, 0.5, 0.0)
    return to_video(array, fps=8)


def test_mp4_reads_back_with_its_frame_count_and_size(tmp_path):
    import imageio.v2 as imageio

    path = tmp_path / "clip.mp4"
    save_video(moving_square(), path)
    reader = imageio.get_reader(path)
    frames = [frame for frame in reader]
    assert len(frames) == 5 and frames[0].shape == (32, 32, 3)
    assert reader.get_meta_data()["fps"] == pytest.approx(8)
    # The orange square moves: frame 4 differs from frame 0 where it went.
    assert frames[4][12, 20].mean() > frames[0][12, 20].mean() + 50
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # the temporary file was renamed


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_pillow_animations_keep_every_frame(tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    video = moving_square()
    save_video(video, path)
    with Image.open(path) as image:
        assert image.n_frames == 5 and image.size == (32, 32)
        image.seek(4)
        assert np.asarray(image.convert("RGB"))[12, 20, 0] > 200
    assert video.describe() == "video: 5 frames, 32x32, 8 fps, 0.62 s"


def test_wav_reads_back(tmp_path):
    samples = np.stack([np.sin(np.linspace(0, 20, 800)), np.linspace(-1, 1, 800)]).astype(np.float32)
    path = tmp_path / "sound.wav"
    save_audio(Audio(samples, 8000), path)
    with wave.open(str(path)) as source:
        assert (source.getnchannels(), source.getframerate(), source.getnframes()) == (2, 8000, 800)
        data = np.frombuffer(source.readframes(800), dtype="<i2").reshape(800, 2).T / 32767
    np.testing.assert_allclose(data, samples, atol=1e-4)
    assert Audio(samples, 8000).describe() == "audio: 2 channel(s), 8000 Hz, 0.10 s"


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("a.png", MediaKind.video, "this model makes videos: cannot write one as '.png'; use .mp4, .gif or .webp"),
        ("a.mp4", MediaKind.image, "this model makes images: cannot write one as '.mp4'"),
        ("a.mp4", MediaKind.audio, "use .wav"),
    ],
)
def test_a_name_that_does_not_suit_the_pipeline_is_refused(tmp_path, name, kind, message):
    with pytest.raises(OutputError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        check_output_path(tmp_path / name, kind, overwrite=False)


def test_without_an_mp4_encoder_videos_default_to_gif_and_mp4_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(media, "mp4_available", lambda: False)
    assert media.default_suffix(MediaKind.video) == ".gif"
    with pytest.raises(OutputError, match=r"no MP4 encoder is installed: pip install 'teacli\[video\]'"):
        check_output_path(tmp_path / "a.mp4", MediaKind.video, overwrite=False)
    monkeypatch.undo()
    assert media.default_suffix(MediaKind.video) == ".mp4"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "a.mp4"], "this model makes images: cannot write one as '.mp4'"),
        (["--frames", "5"], "takes no num_frames; drop --frames"),
        (["--fps", "8"], "makes images, not videos; drop --fps"),
        (["--frames", "0"], "--frames must be an integer between 1 and 10000, got 0"),
    ],
)
def test_video_options_on_an_image_model_are_one_line_errors(teacli_cache, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["generate", "x", *args])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []
