"""What a pipeline makes (an image, a video, a sound) and how each is written to disk.

The kind follows the pipeline, not the file name: a pipeline that takes `num_frames` makes videos,
one that takes an audio length makes sound. Videos go to MP4 through imageio's ffmpeg plugin (the
`video` extra) or, without it, to an animated GIF or WebP through Pillow; sound goes to a 16-bit WAV
through the standard library.
"""

from __future__ import annotations

import inspect
import wave
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from .output import OutputError, check_writable, image_extensions, write_atomic

DEFAULT_FPS = 16.0
VIDEO_SUFFIXES = (".mp4", ".gif", ".webp")
AUDIO_SUFFIXES = (".wav",)
AUDIO_LENGTH_ARGUMENTS = ("audio_end_in_s", "audio_length_in_s")


class MediaKind(str, Enum):
    image = "image"
    video = "video"
    audio = "audio"


def media_kind(pipeline_class: Any) -> MediaKind:
    """From the pipeline's call signature, so it is known before the weights are loaded."""
    parameters = inspect.signature(pipeline_class.__call__).parameters
    if "num_frames" in parameters:
        return MediaKind.video
    if any(name in parameters for name in AUDIO_LENGTH_ARGUMENTS):
        return MediaKind.audio
    return MediaKind.image


@dataclass
class Video:
    frames: list[np.ndarray]  # uint8 HxWx3 each
    fps: float

    @property
    def size(self) -> tuple[int, int]:
        height, width = self.frames[0].shape[:2]
        return width, height

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps

    def describe(self) -> str:
        width, height = self.size
        return f"video: {len(self.frames)} frames, {width}x{height}, {self.fps:g} fps, {self.seconds:.2f} s"


@dataclass
class Audio:
    samples: np.ndarray  # float, channels x samples, in [-1, 1]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[-1] / self.sample_rate

    def describe(self) -> str:
        return f"audio: {self.samples.shape[0]} channel(s), {self.sample_rate} Hz, {self.seconds:.2f} s"


def mp4_available() -> bool:
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def default_suffix(kind: MediaKind) -> str:
    if kind is MediaKind.video:
        return ".mp4" if mp4_available() else ".gif"
    return ".wav" if kind is MediaKind.audio else ".png"


def check_output_path(path: Path, kind: MediaKind, overwrite: bool) -> Path:
    """The file name must suit what the pipeline makes; say what would."""
    suffix = path.suffix.lower()
    allowed = {
        MediaKind.image: tuple(image_extensions()),
        MediaKind.video: VIDEO_SUFFIXES,
        MediaKind.audio: AUDIO_SUFFIXES,
    }[kind]
    if suffix not in allowed:
        wanted = {MediaKind.image: ".png, .jpg or .webp", MediaKind.video: ".mp4, .gif or .webp"}.get(kind, ".wav")
        raise OutputError(f"this model makes {kind.value}s: cannot write one as '{suffix or path.name}'; use {wanted}")
    if suffix == ".mp4" and not mp4_available():
        raise OutputError(
            "no MP4 encoder is installed: pip install 'teacli[video]' (imageio with ffmpeg), or write .gif or .webp"
        )
    return check_writable(path, overwrite)


def to_video(frames: Any, fps: float) -> Video:
    """A pipeline's frames (PIL images, or an array F x H x W x C in [0, 1] or uint8) as a Video."""
    if isinstance(frames, np.ndarray) or hasattr(frames, "numpy"):
        array = np.asarray(frames.float().cpu().numpy() if hasattr(frames, "float") else frames)
        frame_list = [_to_uint8(frame) for frame in array]
    else:
        frame_list = [np.asarray(frame.convert("RGB"), dtype=np.uint8) for frame in frames]
    return Video(frame_list, fps)


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    return (np.clip(frame, 0.0, 1.0) * 255).round().astype(np.uint8)


def to_audio(samples: Any, sample_rate: int) -> Audio:
    array = samples.float().cpu().numpy() if hasattr(samples, "float") else np.asarray(samples, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    return Audio(array, int(sample_rate))


def save_video(video: Video, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        write_atomic(path, lambda temporary: _write_mp4(video, temporary))
        return
    from PIL import Image

    images = [Image.fromarray(frame) for frame in video.frames]
    duration = max(int(round(1000 / video.fps)), 1)
    options = {"lossless": True} if suffix == ".webp" else {}
    write_atomic(
        path,
        lambda temporary: images[0].save(
            temporary,
            format="GIF" if suffix == ".gif" else "WEBP",
            save_all=True,
            append_images=images[1:],
            duration=duration,
            loop=0,
            **options,
        ),
    )


def _write_mp4(video: Video, path: Path) -> None:
    import imageio.v2 as imageio

    # macro_block_size 1 keeps tiny or odd sizes as they are; yuv420p is what players expect.
    with imageio.get_writer(
        path, format="FFMPEG", fps=video.fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1
    ) as writer:
        for frame in video.frames:
            writer.append_data(frame)


def save_audio(audio: Audio, path: Path) -> None:
    pcm = (np.clip(audio.samples, -1.0, 1.0) * 32767).round().astype("<i2")

    def write(temporary: Path) -> None:
        with wave.open(str(temporary), "wb") as sink:
            sink.setnchannels(pcm.shape[0])
            sink.setsampwidth(2)
            sink.setframerate(audio.sample_rate)
            sink.writeframes(pcm.T.tobytes())  # interleaved: one sample per channel per frame

    write_atomic(path, write)


def save_output(output: Any, path: Path) -> None:
    if isinstance(output, Video):
        save_video(output, path)
    elif isinstance(output, Audio):
        save_audio(output, path)
    else:
        from .output import save_image

        save_image(output, path)


def media_tensor(output: Any):
    """The output as a float tensor in [0, 1] (N x C x H x W) for PSNR; None for audio."""
    import torch

    if isinstance(output, Audio):
        return None
    frames = output.frames if isinstance(output, Video) else [np.asarray(output.convert("RGB"), dtype=np.uint8)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).double() / 255.0
