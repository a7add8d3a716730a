"""Running one generation: the pipeline arguments, a per-step callback, and honest timing."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .catalog import Preset
from .hook import synchronize

FALLBACK_TRUE_CFG = 4.0


class GenerationError(ValueError):
    """The requested generation does not fit the pipeline (an argument it does not take, ...)."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    steps: int
    seed: int = 0
    guidance: float | None = None
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None
    true_cfg: float | None = None
    image: Any = None  # a PIL image for editing pipelines (FLUX.1 Kontext, Qwen-Image-Edit, ...)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_preset(cls, preset: Preset, prompt: str, **overrides: Any) -> GenerationRequest:
        """The preset's defaults, replaced by every override that is not None."""
        defaults = preset.defaults
        values = dict(
            prompt=prompt,
            steps=defaults.steps,
            guidance=defaults.guidance,
            height=defaults.height,
            width=defaults.width,
            true_cfg=defaults.true_cfg,
            extra=dict(preset.call_kwargs),
        )
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


def _call_parameters(pipe: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipe.__call__).parameters)


def pipeline_kwargs(pipe: Any, request: GenerationRequest) -> dict[str, Any]:
    """The keyword arguments for `pipe(...)`, using only the names this pipeline takes."""
    params = _call_parameters(pipe)
    kwargs: dict[str, Any] = {
        "prompt": request.prompt,
        "num_inference_steps": request.steps,
        # A CPU generator gives the same starting noise on every device.
        "generator": torch.Generator("cpu").manual_seed(request.seed),
    }
    optional = {"guidance_scale": request.guidance, "height": request.height, "width": request.width}
    kwargs.update({name: value for name, value in optional.items() if value is not None and name in params})
    if request.negative_prompt is not None:
        if "negative_prompt" not in params:
            raise GenerationError(f"{type(pipe).__name__} takes no negative prompt; drop --negative-prompt")
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
    output: Any  # a PIL image for image pipelines
    seconds: float


def generate(pipe: Any, request: GenerationRequest, on_step: Callable[[int], None] | None = None) -> GenerationResult:
    kwargs = pipeline_kwargs(pipe, request)
    if on_step is not None and "callback_on_step_end" in _call_parameters(pipe):

        def callback(_pipe: Any, step: int, _timestep: Any, _tensors: dict) -> dict:
            on_step(step)
            return {}

        kwargs["callback_on_step_end"] = callback
    synchronize(pipe.device)
    started = time.perf_counter()
    result = pipe(**kwargs)
    synchronize(pipe.device)
    seconds = time.perf_counter() - started
    return GenerationResult(output=result.images[0], seconds=seconds)


def open_image(path: str | Path) -> Any:
    """An input image as RGB, read fully now so a bad file fails before the model loads."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise GenerationError(f"--image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as error:
        reason = "not an image Pillow can read" if isinstance(error, UnidentifiedImageError) else str(error)
        raise GenerationError(f"--image {path}: {reason}; give a PNG, JPEG or WebP file") from None


def image_array(image: Any) -> np.ndarray:
    """An RGB image as a uint8 HxWx3 array."""
    return np.array(image.convert("RGB"), dtype=np.uint8)


def psnr(image: Any, reference: Any) -> float:
    """PSNR in dB of `image` against `reference` (torchmetrics); inf when they are identical."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    def to_tensor(picture: Any) -> torch.Tensor:
        return torch.from_numpy(image_array(picture)).permute(2, 0, 1)[None].double() / 255.0

    value = peak_signal_noise_ratio(to_tensor(image), to_tensor(reference), data_range=1.0)
    return float(value)
