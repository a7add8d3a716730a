"""Running one generation: the pipeline arguments, a per-step callback, and honest timing."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..engine.devices import synchronize
from ..engine.diffusers_internals import latent_packer
from ..errors import TeacliError
from ..models.catalog import Preset
from ..settings import SETTINGS, Setting, setting_fields

FALLBACK_TRUE_CFG = 4.0
# Settings pipeline_kwargs passes by rules of their own: the seed makes generators, steps are always passed, a
# negative prompt or an image the pipeline cannot take is refused, true CFG goes with a negative prompt only.
PASSED_BY_RULE = ("seed", "steps", "negative_prompt", "true_cfg", "image", "num_images")


def passed_if_taken(table: Sequence[Setting]) -> tuple[Setting, ...]:
    """The settings of `table` a pipeline gets under each of their `arguments` it takes: all but PASSED_BY_RULE."""
    return tuple(setting for setting in table if setting.name not in PASSED_BY_RULE)


PASSED_IF_TAKEN = passed_if_taken(SETTINGS)


class GenerationError(TeacliError, ValueError):
    """The requested generation does not fit the pipeline (an argument it does not take, ...)."""


@dataclass(frozen=True)
@setting_fields(resolved=True)
class GenerationRequest:
    """One generation as the pipeline gets it: the prompt, every setting of teacli.settings as a keyword-only
    field (steps required; the image a PIL image; seed i of a batch is seed + i) and the preset's call_kwargs."""

    prompt: str
    _: KW_ONLY  # the rest by name (a setting's place among the fields follows the table's order)
    extra: dict[str, Any] = field(default_factory=dict)  # the preset's call_kwargs

    @classmethod
    def from_preset(cls, preset: Preset, prompt: str, **overrides: Any) -> GenerationRequest:
        """The preset's defaults (every setting teacli.settings lets a preset give), replaced by every override
        that is not None."""
        values = {item.name: getattr(preset.defaults, item.name) for item in fields(preset.defaults)}
        values.update(prompt=prompt, extra=dict(preset.call_kwargs))
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


# The argument that makes several outputs per prompt, by what the pipeline makes.
PER_PROMPT_ARGUMENTS = ("num_images_per_prompt", "num_videos_per_prompt", "num_waveforms_per_prompt")


def call_parameters(pipe: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipe.__call__).parameters)


def per_prompt_argument(parameters: Any) -> str | None:
    """The name this pipeline takes for several outputs per prompt, None when it makes one at a time."""
    return next((name for name in PER_PROMPT_ARGUMENTS if name in parameters), None)


def generators(request: GenerationRequest) -> Any:
    """A CPU generator (the same starting noise on every device); one per output in a batch, seeded
    seed, seed + 1, ..., so output i of a batch starts from the noise a single run with seed + i would."""
    if request.num_images == 1:
        return torch.Generator("cpu").manual_seed(request.seed)
    return [torch.Generator("cpu").manual_seed(request.seed + i) for i in range(request.num_images)]


# Where pipelines keep the VAE's spatial downscaling, by the names diffusers uses across families.
VAE_SCALE_ATTRIBUTES = (
    "vae_scale_factor",
    "vae_scale_factor_spatial",
    "vae_spatial_compression_ratio",
    "vae_spatial_scale_factor",
)


def size_multiple(pipe: Any) -> int | None:
    """The step between the heights and widths this pipeline can make: the VAE's downscaling times the
    transformer's spatial patch (2 where the pipeline packs 2x2 latent patches itself); None when unknown."""
    scale = next(
        (getattr(pipe, name) for name in VAE_SCALE_ATTRIBUTES if isinstance(getattr(pipe, name, None), int)), None
    )
    if scale is None:
        return None
    patch = getattr(pipe, "transformer_spatial_patch_size", None)  # pipelines that patchify for the transformer
    if not isinstance(patch, int):
        config = getattr(getattr(pipe, "transformer", None), "config", None)
        patch = getattr(config, "patch_size", None) or getattr(config, "all_patch_size", None)
        patch = patch[-1] if isinstance(patch, (list, tuple)) and patch else patch
        patch = patch if isinstance(patch, int) and patch > 0 else 1
        pack = latent_packer(pipe)
        if patch == 1 and pack is not None and "patch_size" not in inspect.signature(pack).parameters:
            patch = 2  # packs fixed 2x2 latent patches itself
    return scale * patch


def fit_size(pipe: Any, request: GenerationRequest) -> tuple[GenerationRequest, str | None]:
    """The request with a height and width this pipeline can make (rounded down to its size step, as the
    pipelines themselves round), and a warning when that changed what was asked; GenerationError when the
    size is below the smallest the model makes. The returned request is what metadata records."""
    multiple = size_multiple(pipe)
    if multiple is None or (request.height is None and request.width is None):
        return request, None
    fitted: dict[str, int] = {}
    for name in ("height", "width"):
        value = getattr(request, name)
        if value is None:
            continue
        if value < multiple:
            raise GenerationError(
                f"{name} {value} is below the smallest {type(pipe).__name__} can make ({multiple}); "
                f"give a multiple of {multiple}"
            )
        if value % multiple:
            fitted[name] = value - value % multiple
    if not fitted:
        return request, None
    asked = f"{request.height}x{request.width}"
    request = replace(request, **fitted)
    return request, (
        f"{type(pipe).__name__} makes sizes in steps of {multiple}: {asked} (height x width) becomes "
        f"{request.height}x{request.width}, which the output and its metadata record"
    )


def made_frames(request: GenerationRequest, output: Any) -> tuple[GenerationRequest, str | None]:
    """The request with the number of frames the pipeline really made (video models round it, Wan to 4k + 1),
    and a warning when that is not what was asked; the metadata then records the truth."""
    frames = getattr(output, "frames", None)
    if request.frames is None or not isinstance(frames, list) or len(frames) == request.frames:
        return request, None
    note = f"{request.frames} frames were asked for; the pipeline made {len(frames)}, which the metadata records"
    return replace(request, frames=len(frames)), note


def pipeline_kwargs(pipe: Any, request: GenerationRequest) -> dict[str, Any]:
    """The keyword arguments for `pipe(...)`, using only the names this pipeline takes."""
    request, _ = fit_size(pipe, request)  # callers that record the size fitted it already, with a warning
    params = call_parameters(pipe)
    kwargs: dict[str, Any] = {
        "prompt": request.prompt,
        "num_inference_steps": request.steps,
        "generator": generators(request),
    }
    if request.num_images > 1:
        argument = per_prompt_argument(params)
        if argument is None:
            raise GenerationError(
                f"{type(pipe).__name__} makes one output per call; drop num_images", field="num_images"
            )
        kwargs[argument] = request.num_images
    for setting in PASSED_IF_TAKEN:  # the settings a pipeline gets under each name of theirs it takes
        value = getattr(request, setting.name)
        kwargs.update({name: value for name in setting.arguments if value is not None and name in params})
    if request.negative_prompt is not None:
        if "negative_prompt" not in params:
            raise GenerationError(
                f"{type(pipe).__name__} takes no negative prompt; drop negative_prompt", field="negative_prompt"
            )
        kwargs["negative_prompt"] = request.negative_prompt
        if "true_cfg_scale" in params:
            kwargs["true_cfg_scale"] = request.true_cfg if request.true_cfg is not None else FALLBACK_TRUE_CFG
    if request.image is not None:
        if "image" not in params:
            raise GenerationError(f"{type(pipe).__name__} takes no input image; drop --image")
        kwargs["image"] = request.image
    unsupported = sorted(name for name in request.extra if name not in params)
    if unsupported:
        raise GenerationError(
            f"{type(pipe).__name__} does not take {', '.join(unsupported)} (from the preset's call_kwargs)"
        )
    kwargs.update(request.extra)
    return kwargs


@dataclass
class GenerationResult:
    outputs: list[Any]  # PIL images for image pipelines; one per --num-images
    seconds: float

    @property
    def output(self) -> Any:
        return self.outputs[0]


def generate(pipe: Any, request: GenerationRequest, on_step: Callable[[int], None] | None = None) -> GenerationResult:
    kwargs = pipeline_kwargs(pipe, request)
    if on_step is not None and "callback_on_step_end" in call_parameters(pipe):

        def callback(_pipe: Any, step: int, _timestep: Any, _tensors: dict) -> dict:
            on_step(step)
            return {}

        kwargs["callback_on_step_end"] = callback
    synchronize(pipe.device)
    started = time.perf_counter()
    result = pipe(**kwargs)
    synchronize(pipe.device)
    seconds = time.perf_counter() - started
    return GenerationResult(outputs=outputs_of(pipe, result, request), seconds=seconds)


def outputs_of(pipe: Any, result: Any, request: GenerationRequest) -> list[Any]:
    """The request's images (PIL), videos (media.Video) or sounds (media.Audio) from a pipeline's result."""
    from .media import DEFAULT_FPS, to_audio, to_video

    count = request.num_images
    if getattr(result, "frames", None) is not None:
        return [to_video(frames, request.fps or DEFAULT_FPS) for frames in result.frames[:count]]
    if getattr(result, "audios", None) is not None:
        vae = getattr(pipe, "vae", None)
        rate = getattr(vae, "sampling_rate", None) or getattr(getattr(vae, "config", None), "sampling_rate", None)
        if rate is None:
            raise GenerationError(f"{type(pipe).__name__} made audio but its VAE names no sampling rate")
        return [to_audio(samples, rate) for samples in result.audios[:count]]
    return list(result.images[:count])


def open_image(path: str | Path) -> Any:
    """An input image as RGB, read fully now so a bad file fails before the model loads."""
    import os
    import stat

    from PIL import Image, UnidentifiedImageError

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a pipe or a device would block or never end
            raise GenerationError(f"image {path} is not a regular file; give a PNG, JPEG or WebP file", field="image")
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise GenerationError(f"image {path} does not exist; give a PNG, JPEG or WebP file", field="image") from None
    except Image.DecompressionBombError:
        raise GenerationError(
            f"image {path} is too large to be an input image (Pillow's size limit)", field="image"
        ) from None
    except (UnidentifiedImageError, OSError) as error:
        reason = "not an image Pillow can read" if isinstance(error, UnidentifiedImageError) else str(error)
        raise GenerationError(f"image {path}: {reason}; give a PNG, JPEG or WebP file", field="image") from None
