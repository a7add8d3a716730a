"""What the user asked for besides the model: how to load it (LoRA, compile, trust) and how to cache.

Both are plain data, so `teacli bench --isolate` can hand them to a fresh process, and reports and output
metadata can say exactly what ran.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

from .. import limits
from ..errors import TeacliError
from ..models.catalog import Preset
from ..models.memory import (
    NOT_QUANTIZED,
    check_offload,
    check_on_device,
    check_quantize,
    enable_offload,
)


class OptionsError(TeacliError, ValueError):
    """An option value that cannot work; the message names the field (`field`) and what it takes."""


@dataclass(frozen=True)
class LoadOptions:
    """How the pipeline is loaded and prepared before any cache is applied."""

    allow_pickle: bool = False  # pickle (.bin/.pt) weights run code when loaded: only when the user says so
    offline: bool = False  # never reach the hub: only what is on disk or in the local Hugging Face cache
    lora: str | None = None  # a LoRA file, directory or hub id, through diffusers' loaders
    lora_scale: float = 1.0
    compile: bool = False  # torch.compile the transformer blocks (regional), not the cache decision
    offload: str | None = None  # model, sequential or group: weights kept on the CPU (models.memory)
    quantize: str | None = None  # the denoisers quantized while loading, e.g. torchao-int8 (models.memory)

    def __post_init__(self) -> None:
        if not math.isfinite(self.lora_scale):
            raise OptionsError(f"lora_scale must be a finite number, got {self.lora_scale}", field="lora_scale")
        limits.check("lora_scale", self.lora_scale, OptionsError)
        check_offload(self.offload)
        check_quantize(self.quantize)
        if self.quantize == NOT_QUANTIZED:  # from the API as from the command line: the weights as they are
            object.__setattr__(self, "quantize", None)
        if self.offload == "sequential" and self.quantize is not None and self.quantize.startswith("bnb-"):
            raise OptionsError(
                f"bitsandbytes weights ({self.quantize}) cannot be offloaded layer by layer; use offload model or "
                "group",
                field=("offload", "quantize"),
            )
        if self.lora is not None and self.quantize is not None and self.quantize.startswith("quanto-"):
            raise OptionsError(
                f"a LoRA cannot go on optimum-quanto weights ({self.quantize}): diffusers' LoRA loader does not "
                "know quanto's layers; use a torchao-* or bnb-* method with lora",
                field=("lora", "quantize"),
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_options(
    allow_pickle: bool = False,
    offline: bool = False,
    lora: str | None = None,
    lora_scale: float = 1.0,
    compile: bool = False,
    offload: str | None = None,
    quantize: str | None = None,
) -> LoadOptions:
    """LoadOptions checked before anything loads: offline set for this process and those it starts (go_offline),
    a LoRA that is not there refused now rather than after the model has loaded."""
    if offline:
        go_offline()
    if lora is not None:
        from ..models.lora import locate_lora

        locate_lora(lora, allow_pickle=allow_pickle, offline=offline)
    return LoadOptions(allow_pickle, offline, lora, lora_scale, compile, offload, quantize)


def go_offline() -> None:
    """Offline for the processes teacli starts (bench's isolated runs) and what reads the environment late; in this
    process huggingface_hub has read it already, so the loaders are told themselves (teacli.models.loading)."""
    import os

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[variable] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass(frozen=True)
class CacheOptions:
    """The TeaCache settings a user may give on top of the preset's; None keeps the preset's (or the default)."""

    start: float | None = None  # caching only allowed from this fraction of the schedule on
    end: float | None = None  # ... and before this one
    ret_steps: int | None = None  # always compute the first N steps
    max_cached_in_row: int | None = None  # never reuse more than N calls in a row
    cache_device: str | None = None  # keep cached residuals here (cpu: host memory)

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise OptionsError(f"{name} is a fraction of the schedule between 0 and 1, got {value}", field=name)
        start = 0.0 if self.start is None else self.start
        end = 1.0 if self.end is None else self.end
        if not start < end:
            raise OptionsError(
                f"start ({start:g}) must be below end ({end:g}): no step would be cacheable", field=("start", "end")
            )
        limits.check("ret_steps", self.ret_steps, OptionsError)
        in_row = self.max_cached_in_row
        if isinstance(in_row, int) and not isinstance(in_row, bool) and in_row < 1:
            raise OptionsError(
                f"max_cached_in_row must be at least 1, got {in_row} (thresh 0 never reuses)",
                field=("max_cached_in_row", "thresh"),
            )
        limits.check("max_cached_in_row", self.max_cached_in_row, OptionsError)
        if self.cache_device is not None:
            check_cache_device(self.cache_device)

    def given(self) -> dict[str, Any]:
        """The settings the user gave, by TeaCacheConfig field name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def apply(self, configs: Any) -> Any:
        """The configs (one TeaCacheConfig, or one per denoiser) with the user's settings in place."""
        given = self.given()
        if not given:
            return configs
        if isinstance(configs, dict):
            return {name: replace(config, **given) for name, config in configs.items()}
        return replace(configs, **given)


# Device types that hold real memory a residual can be kept in ("meta" has shapes but no values).
STORAGE_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "npu", "hpu")


def check_cache_device(name: str) -> None:
    """cache_device names a device torch knows, that stores values, and that this machine has."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise OptionsError(
            f"cache_device takes a torch device such as cpu or cuda:0, got {limits.short(name)}", field="cache_device"
        ) from None
    if device.type not in STORAGE_DEVICE_TYPES:
        raise OptionsError(
            f"cache_device {name} cannot hold residuals (a {device.type} tensor has no values); use cpu or a GPU",
            field="cache_device",
        )
    backend = getattr(torch, device.type, None)
    available = device.type == "cpu" or (backend is not None and backend.is_available())
    if not available:
        raise OptionsError(
            f"cache_device {name}: no {device.type} device is available here; use cpu", field="cache_device"
        )
    if device.index is not None and device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise OptionsError(
            f"cache_device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); use cpu or cuda:0",
            field="cache_device",
        )


def prepare_pipeline(preset: Preset, device: torch.device, dtype: torch.dtype, options: LoadOptions) -> Any:
    """Load the pipeline (its denoisers quantized while loading), then add the LoRA, offload and compile the
    blocks, in the order that keeps each valid: a LoRA changes the blocks' layers, so offloading and compiling
    come after it; offloading's hooks go on before compiling traces the blocks. TeaCache, applied later, goes
    beneath the offload hooks (engine/layering.py)."""
    from ..models.loading import load_pipeline

    check_on_device(options.offload, options.quantize, device)  # before anything loads
    pipe = load_pipeline(
        preset,
        device,
        dtype,
        allow_pickle=options.allow_pickle,
        offline=options.offline,
        quantize=options.quantize,
        on_device=options.offload is None,
    )
    if options.lora is not None:
        from ..models.lora import load_lora

        load_lora(pipe, options.lora, options.lora_scale, allow_pickle=options.allow_pickle, offline=options.offline)
    if options.offload is not None:
        enable_offload(pipe, options.offload, device)
    if options.compile:
        from ..engine.compile import compile_transformer_blocks

        compile_transformer_blocks(pipe)
    return pipe
