"""Options shared by several commands, declared once."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ._app import CLIError


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class DType(str, Enum):
    auto = "auto"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Preset name, hub id, local pipeline path or preset .yaml [default: tiny-flux]"),
]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Denoising steps [default: the preset's]")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed for the starting noise")]
GuidanceOpt = Annotated[float | None, typer.Option("--guidance", help="Guidance scale [default: the preset's]")]
HeightOpt = Annotated[int | None, typer.Option("--height", help="Image height [default: the preset's]")]
WidthOpt = Annotated[int | None, typer.Option("--width", help="Image width [default: the preset's]")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run")]
DTypeOpt = Annotated[DType, typer.Option("--dtype", help="Weights dtype (auto: bfloat16 on CUDA, float32 elsewhere)")]
ImageOpt = Annotated[
    Path | None,
    typer.Option("--image", help="Input image for editing models (FLUX.1 Kontext, Qwen-Image-Edit, ...)"),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log a line per transformer call")]
CoefficientsOpt = Annotated[
    str | None,
    typer.Option(
        "--coefficients",
        help="Rescaling polynomial a,b,c,d,e (2-7 numbers, highest power first) for every denoiser, "
        "instead of the preset's [default: the preset's]",
    ),
]

# What reports and logs say about coefficients given with --coefficients.
COEFFICIENTS_OPTION_SOURCE = "user (--coefficients)"
COEFFICIENTS_FORM = "2-7 comma-separated numbers, highest power first, e.g. 498.65,-283.78,55.86,-3.82,0.264"


def check_thresh(value: float) -> float:
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise CLIError(f"--thresh must be a finite number >= 0 (0 disables caching), got {value}")
    return value


def parse_thresholds(text: str) -> list[float]:
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise CLIError(
                f"--thresh takes comma-separated numbers like 0.1,0.2,0.4; '{part.strip()}' is not a number"
            ) from None
        values.append(check_thresh(value))
    return values


def check_steps(steps: int | None) -> int | None:
    if steps is not None and steps < 2:
        raise CLIError(f"--steps must be at least 2 (the first and last steps are always computed), got {steps}")
    return steps


def check_positive(name: str, value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise CLIError(f"{name} must be positive, got {value}")
    return value


def parse_coefficients(text: str | None) -> tuple[float, ...] | None:
    """--coefficients a,b,c,d,e: the polynomial TeaCache rescales rel_l1 with, as presets write it."""
    if text is None:
        return None
    parts = text.split(",")
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise CLIError(f"--coefficients takes {COEFFICIENTS_FORM}; '{part.strip()}' is not a number") from None
    if not 2 <= len(values) <= 7:
        raise CLIError(f"--coefficients takes {COEFFICIENTS_FORM}; got {len(values)} number(s)")
    bad = next((part.strip() for part, value in zip(parts, values) if not math.isfinite(value)), None)
    if bad is not None:
        raise CLIError(f"--coefficients takes {COEFFICIENTS_FORM}; '{bad}' is not finite")
    return tuple(values)
