"""Options shared by several commands, declared once."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer

from .. import limits, settings
from ..models.catalog import DEFAULT_PRESET
from ..models.memory import OFFLOAD_HELP, OFFLOAD_MODES, QUANTIZE_HELP
from ._app import CLIError

Command = TypeVar("Command", bound=Callable[..., Any])


def setting_option(name: str, *short: str) -> Any:
    """The option of a generation setting, declared by its row in teacli.settings (flag, help, default shown)."""
    return _option_of(settings.setting(name), *short)


def _option_of(row: settings.Setting, *short: str) -> Any:
    return typer.Option(row.flag, *short, help=row.help, show_default=row.show_default)


def setting_options(after: str, exclude: tuple[str, ...] = ()) -> Callable[[Command], Command]:
    """Give a command an option for every row of teacli.settings it does not declare itself (nor `exclude`),
    placed after its parameter `after`, so a new setting reaches the command line with no edit in the CLI. The
    command takes them in `**settings`."""

    def add(command: Command) -> Command:
        declared = inspect.signature(command, eval_str=True).parameters
        added = []
        for row in settings.SETTINGS:
            if row.name in declared or row.name in exclude:
                continue
            if row.type not in (int, float, str):
                raise TypeError(f"{command.__name__} must declare the option of the setting {row.name!r} itself")
            added.append((row.name, Annotated[row.given_type, _option_of(row)], row.default))
        return _with_parameters(command, after, added)

    return add


def with_options(table: dict[str, tuple[Any, Any]], after: str) -> Callable[[Command], Command]:
    """Give a command the options of `table` (LOADING, CACHING: name -> annotation, default), after its parameter
    `after`; it takes them in its `**` parameter, and `taken` takes them out."""
    return lambda command: _with_parameters(command, after, [(name, *option) for name, option in table.items()])


def taken(values: dict[str, Any], table: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """The options of `table` taken out of a command's `**` parameter, by name (for load_options, CacheOptions)."""
    return {name: values.pop(name) for name in table if name in values}


def _with_parameters(command: Command, after: str, added: list[tuple[str, Any, Any]]) -> Command:
    """Typer reads a command's options from its signature: write one with `added` (name, annotation, default)
    placed after `after`, every parameter from there on keyword-only."""
    signature = inspect.signature(command, eval_str=True)
    own = [parameter for parameter in signature.parameters.values() if parameter.kind is not parameter.VAR_KEYWORD]
    keyword = inspect.Parameter.KEYWORD_ONLY
    new = [inspect.Parameter(name, keyword, default=default, annotation=kind) for name, kind, default in added]
    place = [parameter.name for parameter in own].index(after) + 1
    rest = [parameter.replace(kind=keyword) for parameter in own[place:]]
    command.__signature__ = signature.replace(parameters=[*own[:place], *new, *rest])
    command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}
    return command


MODEL_HELP = "Preset name, hub id, local pipeline path or preset .yaml"
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP, show_default=DEFAULT_PRESET)]
GuidanceOpt = Annotated[float | None, setting_option("guidance")]
HeightOpt = Annotated[int | None, setting_option("height")]
WidthOpt = Annotated[int | None, setting_option("width")]
ImageOpt = Annotated[Path | None, setting_option("image")]
NumImagesOpt = Annotated[int, setting_option("num_images", "-n")]
NumPromptsOpt = Annotated[int | None, typer.Option("--num-prompts", help="Use the first N prompts", show_default="all")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout (tables go to stderr)")]
DeviceOpt = Annotated[Literal["auto", "cpu", "cuda", "mps"], typer.Option("--device", help="Where to run")]
DTypeOpt = Annotated[
    Literal["auto", "float32", "float16", "bfloat16"],
    typer.Option("--dtype", help="Weights dtype (auto: bfloat16 on CUDA, float32 elsewhere)"),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log a line per transformer call")]
COEFFICIENTS_HELP = (
    "Rescaling polynomial a,b,c,d,e (2-7 numbers, highest power first) for every denoiser, instead of the preset's"
)
CoefficientsOpt = Annotated[
    str | None, typer.Option("--coefficients", help=COEFFICIENTS_HELP, show_default="the preset's")
]


BUDGET_HELP = (
    "Computed steps, e.g. 10, or a speedup, e.g. 3x: runs the preset's calibrated plan for it (teacli calibrate "
    "--plan), else the steps spread evenly. Instead of --thresh"
)
POLICY_HELP = (
    "auto: the preset's plan at its budget where it has one, else TeaCache's rule; teacache: TeaCache's own rule "
    "(the reference's decisions); plan: a calibrated plan only; uniform: evenly spread steps"
)
BudgetOpt = Annotated[str | None, typer.Option("--budget", "-b", help=BUDGET_HELP)]
PolicyOpt = Annotated[str, typer.Option("--policy", help=POLICY_HELP)]


# Options of the cache and of the loading that generate, bench and calibrate share where they apply.
START_HELP = "Cache window start, a fraction of the schedule: no reuse before it"
END_HELP = "Cache window end, a fraction of the schedule: no reuse from it on"
CACHE_DEVICE_HELP = "Keep cached residuals on this device, e.g. cpu to save GPU memory on long videos"
LORA_HELP = "LoRA weights (a .safetensors file, a directory or a hub id) loaded with diffusers"
COMPILE_HELP = "torch.compile the transformer blocks (regional; the first run pays for compiling)"
ALLOW_PICKLE_HELP = "Also load pickle (.bin/.pt) weights, which can run code: only files you trust"
OFFLINE_HELP = "Make no network request: local paths and the local Hugging Face cache only"
STRICT_HELP = "Refuse, instead of warning, settings that make caching useless or harmful"

StartOpt = Annotated[float | None, typer.Option("--start", help=START_HELP, show_default="0")]
EndOpt = Annotated[float | None, typer.Option("--end", help=END_HELP, show_default="1")]
RetStepsOpt = Annotated[
    int | None, typer.Option("--ret-steps", help="Always compute the first N steps", show_default="the preset's")
]
MaxCachedInRowOpt = Annotated[
    int | None,
    typer.Option("--max-cached-in-row", help="Never reuse more than N calls in a row", show_default="no limit"),
]
CacheDeviceOpt = Annotated[
    str | None, typer.Option("--cache-device", help=CACHE_DEVICE_HELP, show_default="the model's")
]
# The TeaCache settings a user may give on top of the preset's, the same for generate and bench.
CACHING = {
    "start": (StartOpt, None), "end": (EndOpt, None), "ret_steps": (RetStepsOpt, None),
    "max_cached_in_row": (MaxCachedInRowOpt, None), "cache_device": (CacheDeviceOpt, None),
}  # fmt: skip
LoraOpt = Annotated[str | None, typer.Option("--lora", help=LORA_HELP)]
LoraScaleOpt = Annotated[float, typer.Option("--lora-scale", help="Strength of --lora")]
CompileOpt = Annotated[bool, typer.Option("--compile", help=COMPILE_HELP)]
AllowPickleOpt = Annotated[bool, typer.Option("--allow-pickle", help=ALLOW_PICKLE_HELP)]
OfflineOpt = Annotated[bool, typer.Option("--offline", help=OFFLINE_HELP)]
StrictOpt = Annotated[bool, typer.Option("--strict", help=STRICT_HELP)]
OffloadOpt = Annotated[Literal[tuple(OFFLOAD_MODES)] | None, typer.Option("--offload", help=OFFLOAD_HELP)]
QuantizeOpt = Annotated[str | None, typer.Option("--quantize", metavar="METHOD", help=QUANTIZE_HELP)]
# How the model loads, the same for generate, bench and calibrate (name: annotation, default).
LOADING = {
    "lora": (LoraOpt, None), "lora_scale": (LoraScaleOpt, 1.0), "compile": (CompileOpt, False),
    "offload": (OffloadOpt, None), "quantize": (QuantizeOpt, None), "device": (DeviceOpt, "auto"),
    "dtype": (DTypeOpt, "auto"), "allow_pickle": (AllowPickleOpt, False), "offline": (OfflineOpt, False),
}  # fmt: skip


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
