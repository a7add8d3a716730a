"""Options shared by several commands, declared once."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import limits, settings
from ..models.catalog import DEFAULT_PRESET
from ._app import CLIError

if TYPE_CHECKING:
    from ..generation.preparation import CacheOptions, LoadOptions


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


def setting_option(name: str, *short: str) -> Any:
    """The option of a generation setting, declared by its row in teacli.settings (flag, help, default shown)."""
    row = settings.setting(name)
    return typer.Option(row.flag, *short, help=row.help, show_default=row.show_default)


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Preset name, hub id, local pipeline path or preset .yaml", show_default=DEFAULT_PRESET
    ),
]
StepsOpt = Annotated[int | None, setting_option("steps")]
SeedOpt = Annotated[int, setting_option("seed")]
GuidanceOpt = Annotated[float | None, setting_option("guidance")]
HeightOpt = Annotated[int | None, setting_option("height")]
WidthOpt = Annotated[int | None, setting_option("width")]
ImageOpt = Annotated[Path | None, setting_option("image")]
NegativePromptOpt = Annotated[str | None, setting_option("negative_prompt")]
TrueCfgOpt = Annotated[float | None, setting_option("true_cfg")]
FramesOpt = Annotated[int | None, setting_option("frames")]
FpsOpt = Annotated[float | None, setting_option("fps")]
NumImagesOpt = Annotated[int, setting_option("num_images", "-n")]
NumPromptsOpt = Annotated[int | None, typer.Option("--num-prompts", help="Use the first N prompts", show_default="all")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout (tables go to stderr)")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run")]
DTypeOpt = Annotated[DType, typer.Option("--dtype", help="Weights dtype (auto: bfloat16 on CUDA, float32 elsewhere)")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log a line per transformer call")]
CoefficientsOpt = Annotated[
    str | None,
    typer.Option(
        "--coefficients",
        help="Rescaling polynomial a,b,c,d,e (2-7 numbers, highest power first) for every denoiser, "
        "instead of the preset's",
        show_default="the preset's",
    ),
]

# What reports and logs say about coefficients given with --coefficients.
COEFFICIENTS_OPTION_SOURCE = "user (--coefficients)"
COEFFICIENTS_FORM = "2-7 comma-separated numbers, highest power first, e.g. 498.65,-283.78,55.86,-3.82,0.264"


BudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--budget",
        "-b",
        help="Computed steps, e.g. 10, or a speedup, e.g. 3x: runs the preset's calibrated plan for it "
        "(teacli calibrate --plan), else the steps spread evenly. Instead of --thresh",
    ),
]
PolicyOpt = Annotated[
    str,
    typer.Option(
        "--policy",
        help="auto: the preset's plan at its budget where it has one, else TeaCache's rule; teacache: TeaCache's "
        "own rule (the reference's decisions); plan: a calibrated plan only; uniform: evenly spread steps",
    ),
]


def check_policy(policy: str, budget: str | None) -> None:
    """--policy is one of the policies and --budget reads as steps or a speedup, before anything loads."""
    from ..generation.policy import POLICIES

    if policy not in POLICIES:
        raise CLIError(f"--policy {limits.clip(policy)} is not one of {', '.join(POLICIES)}")
    if budget is not None:
        text = budget.strip().lower()
        try:  # a whole number of steps, or a speedup such as 2.5x
            value = float(text[:-1]) if text.endswith("x") else float(int(text))
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 1:
            raise CLIError(
                f"--budget {limits.clip(budget) or repr(budget)} is neither a number of computed steps (e.g. 10) "
                "nor a speedup (e.g. 3x)"
            )


def check_thresh(value: float) -> float:
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise CLIError(f"--thresh must be a finite number >= 0 (0 disables caching), got {value}")
    return limits.check("thresh", value, CLIError)


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


def check_ranges(**values: object) -> None:
    """Every number the user typed against its range (a setting's row in teacli.settings, else teacli.limits),
    before anything is loaded: NaN, infinity and values too large for torch fail here with the option named."""
    for name, value in values.items():
        settings.check(name, value, CLIError)


def check_seeds(seed: int, count: int) -> None:
    """Output i uses seed + i: the last seed must still fit torch's 64-bit generator."""
    check_ranges(seed=seed)
    if seed + count - 1 > limits.MAX_SEED:
        raise CLIError(
            f"--seed {seed} + {count - 1} (one seed per output) is above {limits.MAX_SEED}; use a smaller --seed"
        )


def check_text(option: str, text: str | None) -> None:
    """Text from the command line that is not valid UTF-8 reaches Python with lone surrogates, which a tokenizer
    fails on after the model has loaded: refuse it now, naming the first bad byte."""
    position = None if text is None else limits.unencodable(text)
    if position is None:
        return
    char = ord(text[position])
    byte = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"character U+{char:04X}"
    raise CLIError(
        f"{option} is not valid UTF-8 text ({byte} at position {position}); "
        "set the terminal to UTF-8 or check the quoting"
    )


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


# Options of the cache and of the loading that generate, bench and calibrate share where they apply.
StartOpt = Annotated[
    float | None,
    typer.Option(
        "--start", help="Cache window start, a fraction of the schedule: no reuse before it", show_default="0"
    ),
]
EndOpt = Annotated[
    float | None,
    typer.Option("--end", help="Cache window end, a fraction of the schedule: no reuse from it on", show_default="1"),
]
RetStepsOpt = Annotated[
    int | None, typer.Option("--ret-steps", help="Always compute the first N steps", show_default="the preset's")
]
MaxCachedInRowOpt = Annotated[
    int | None,
    typer.Option("--max-cached-in-row", help="Never reuse more than N calls in a row", show_default="no limit"),
]
CacheDeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--cache-device",
        help="Keep cached residuals on this device, e.g. cpu to save GPU memory on long videos",
        show_default="the model's",
    ),
]
LoraOpt = Annotated[
    str | None,
    typer.Option("--lora", help="LoRA weights (a .safetensors file, a directory or a hub id) loaded with diffusers"),
]
LoraScaleOpt = Annotated[float, typer.Option("--lora-scale", help="Strength of --lora")]
CompileOpt = Annotated[
    bool,
    typer.Option("--compile", help="torch.compile the transformer blocks (regional; the first run pays for compiling)"),
]
AllowPickleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-pickle", help="Also load pickle (.bin/.pt) weights, which can run code: only files you trust"
    ),
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Make no network request: local paths and the local Hugging Face cache only")
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Refuse, instead of warning, settings that make caching useless or harmful")
]


def load_options(allow_pickle: bool, offline: bool, lora: str | None, lora_scale: float, compile: bool) -> LoadOptions:
    """The loading options, checked before anything is loaded."""
    from ..generation.preparation import LoadOptions

    if offline:
        go_offline()
    if lora is not None:
        from ..models.lora import locate_lora

        locate_lora(lora, allow_pickle=allow_pickle, offline=offline)  # a missing file fails before loading
    return LoadOptions(allow_pickle=allow_pickle, offline=offline, lora=lora, lora_scale=lora_scale, compile=compile)


def cache_options(
    start: float | None,
    end: float | None,
    ret_steps: int | None,
    max_cached_in_row: int | None,
    cache_device: str | None,
) -> CacheOptions:
    from ..generation.preparation import CacheOptions

    return CacheOptions(
        start=start, end=end, ret_steps=ret_steps, max_cached_in_row=max_cached_in_row, cache_device=cache_device
    )


def go_offline() -> None:
    """Offline for the processes teacli starts (bench --isolate) and what reads the environment late; in this
    process huggingface_hub has read it already, so the loaders are told themselves (teacli.models.loading)."""
    import os

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[variable] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
