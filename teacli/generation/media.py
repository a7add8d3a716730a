"""What a pipeline makes (an image, a video, a sound) and how each is written to disk.

The kind follows the pipeline, not the file name: a pipeline that takes `num_frames` makes videos,
one that takes an audio length makes sound. Videos go to MP4 through imageio's ffmpeg plugin (the
`video` extra) or, without it, to an animated GIF or WebP through Pillow; sound goes to a 16-bit WAV
through the standard library.

What an output was made with (metadata.output_metadata) goes into PNG text chunks, or for every other
file into a sidecar `<file>.json` written together with it.
"""

from __future__ import annotations

import inspect
import json
import wave
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from .output import OutputError, Writer, check_writable, image_extensions, json_writer, write_atomic_group

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


# Image formats an output may be written as: RGB pictures Pillow writes (not every format Pillow can name:
# .psd or .mpeg only read, .xbm only black and white).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def default_suffix(kind: MediaKind) -> str:
    if kind is MediaKind.video:
        return ".mp4" if mp4_available() else ".gif"
    return ".wav" if kind is MediaKind.audio else ".png"


def check_output_path(path: Path, kind: MediaKind, overwrite: bool, metadata: bool = True) -> Path:
    """The file name must suit what the pipeline makes; say what would. With metadata, the sidecar the
    output will get (sidecar_path) must be free too, under the same --overwrite."""
    if path.is_dir():
        raise OutputError(f"output path {path} is a directory; give a file name")
    suffix = path.suffix.lower()
    allowed = {
        MediaKind.image: IMAGE_SUFFIXES,
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
    check_writable(path, overwrite)
    sidecar = sidecar_path(path, kind) if metadata else None
    if sidecar is not None:
        if sidecar.is_dir():
            raise OutputError(f"{sidecar} (where {path.name}'s metadata goes) is a directory; choose another path")
        if sidecar.exists() and not overwrite:
            raise OutputError(
                f"{sidecar} ({path.name}'s metadata) already exists; pass --overwrite to replace it "
                "or choose another path"
            )
    return path


def is_png(path: Path) -> bool:
    return image_extensions().get(path.suffix.lower()) == "PNG"


def sidecar_path(path: Path, kind: MediaKind) -> Path | None:
    """Where the metadata of `path` goes: None for a PNG image (its text chunks hold it), else `<path>.json`."""
    if kind is MediaKind.image and is_png(path):
        return None
    return path.with_name(path.name + ".json")


def output_paths(
    out: Path | None,
    count: int,
    kind: MediaKind,
    directory: Path,
    overwrite: bool,
    suffix: str | None = None,
    metadata: bool = True,
) -> list[Path]:
    """Where `count` outputs go, every one checked like check_output_path (sidecars too) before anything
    is generated.

    One output: `out` as given, else the first free directory/teacli-NNNN{suffix} (suffix: default_suffix
    of the kind). Several: out's stem numbered (cat.png: cat-1.png ... cat-N.png), else the next `count`
    free teacli-NNNN names, skipping taken ones. A numbered name is free when neither it nor its sidecar
    exists; a name made from `out` that is taken is an error unless overwrite.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise OutputError(f"--num-images must be at least 1, got {count}")
    if out is not None:
        if count == 1:
            return [check_output_path(out, kind, overwrite, metadata)]
        names = [out.with_name(f"{out.stem}-{number}{out.suffix}") for number in range(1, count + 1)]
        return [check_output_path(name, kind, overwrite, metadata) for name in names]

    suffix = suffix or default_suffix(kind)

    def taken(path: Path) -> bool:
        sidecar = sidecar_path(path, kind) if metadata else None
        return path.exists() or path.is_symlink() or (sidecar is not None and sidecar.exists())

    paths: list[Path] = []
    for number in range(1, 100_000):
        candidate = directory / f"teacli-{number:04d}{suffix}"
        if not taken(candidate):
            paths.append(check_output_path(candidate, kind, False, metadata))
            if len(paths) == count:
                return paths
    raise OutputError(f"no {count} free output names left in {directory}; pass --out")


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


def save_video(video: Video, path: Path, overwrite: bool = False) -> None:
    write_atomic_group([(path, video_writer(video, path))], overwrite)


def video_writer(video: Video, path: Path) -> Writer:
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        return lambda temporary: _write_mp4(video, temporary)
    from PIL import Image

    images = [Image.fromarray(frame) for frame in video.frames]
    duration = max(int(round(1000 / video.fps)), 1)
    if suffix == ".gif":  # GIF counts in hundredths of a second, and players slow down anything under 2
        duration = max(int(round(100 / video.fps)), 2) * 10
    options = {"lossless": True} if suffix == ".webp" else {}
    return lambda temporary: images[0].save(
        temporary,
        format="GIF" if suffix == ".gif" else "WEBP",
        save_all=True,
        append_images=images[1:],
        duration=duration,
        loop=0,
        **options,
    )


def _write_mp4(video: Video, path: Path) -> None:
    import imageio.v2 as imageio

    # macro_block_size 1 keeps tiny or odd sizes as they are; yuv420p is what players expect.
    with imageio.get_writer(
        path, format="FFMPEG", fps=video.fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1
    ) as writer:
        for frame in video.frames:
            writer.append_data(frame)


def save_audio(audio: Audio, path: Path, overwrite: bool = False) -> None:
    write_atomic_group([(path, audio_writer(audio))], overwrite)


def audio_writer(audio: Audio) -> Writer:
    pcm = (np.clip(audio.samples, -1.0, 1.0) * 32767).round().astype("<i2")

    def write(temporary: Path) -> None:
        with wave.open(str(temporary), "wb") as sink:
            sink.setnchannels(pcm.shape[0])
            sink.setsampwidth(2)
            sink.setframerate(audio.sample_rate)
            sink.writeframes(pcm.T.tobytes())  # interleaved: one sample per channel per frame

    return write


def image_writer(image: Any, path: Path, metadata: Mapping[str, Any] | None = None) -> Writer:
    image_format = image_extensions()[path.suffix.lower()]
    options: dict[str, Any] = {}
    if metadata is not None and image_format == "PNG":
        from .metadata import png_info

        options["pnginfo"] = png_info(metadata)
    return lambda temporary: image.save(temporary, format=image_format, **options)


def output_kind(output: Any) -> MediaKind:
    if isinstance(output, Video):
        return MediaKind.video
    return MediaKind.audio if isinstance(output, Audio) else MediaKind.image


def save_output(output: Any, path: Path, metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> None:
    """Write an image, Video or Audio, with its metadata in PNG text chunks or a sidecar `<path>.json`.

    The output and its sidecar are written to temporary files and renamed together: an error or Ctrl-C
    leaves neither behind. overwrite=False never replaces an existing file, even one made meanwhile."""
    kind = output_kind(output)
    if kind is MediaKind.video:
        writer = video_writer(output, path)
    elif kind is MediaKind.audio:
        writer = audio_writer(output)
    else:
        writer = image_writer(output, path, metadata)
    files = [(path, writer)]
    sidecar = sidecar_path(path, kind) if metadata is not None else None
    if sidecar is not None:
        from .metadata import jsonable

        files.append((sidecar, json_writer(jsonable(metadata))))
    write_atomic_group(files, overwrite)


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata teacli stored with an output: its PNG "teacli" text chunk, else its sidecar JSON."""
    from .metadata import PNG_KEY

    path = Path(path)
    if not path.is_file():
        raise OutputError(f"{path} does not exist; give an output teacli wrote")
    if is_png(path):
        from PIL import Image

        with Image.open(path) as image:
            text = getattr(image, "text", {}).get(PNG_KEY)
        if text is not None:
            return json.loads(text)
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        raise OutputError(f"{path} has no teacli metadata: no '{PNG_KEY}' PNG text chunk and no {sidecar.name}")
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OutputError(f"{sidecar} is not valid JSON ({error}); it is not teacli metadata") from None


def media_tensor(output: Any):
    """The output as a float tensor in [0, 1] (N x C x H x W) for PSNR; None for audio."""
    import torch

    if isinstance(output, Audio):
        return None
    frames = output.frames if isinstance(output, Video) else [np.asarray(output.convert("RGB"), dtype=np.uint8)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).double() / 255.0
