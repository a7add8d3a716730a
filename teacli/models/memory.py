"""Fitting a big model in the memory there is: offloading weights to the CPU, quantizing the denoisers.

Offloading (`offload`): diffusers' three ways, applied after the pipeline is loaded (and its LoRA added):
- `model`: enable_model_cpu_offload, each whole component moved onto the GPU while it runs;
- `sequential`: enable_sequential_cpu_offload, each layer moved in for its own call (least memory, slowest);
- `group`: enable_group_offload, one transformer block at a time, prefetched on a CUDA stream where there is one.
TeaCache's hook goes beneath every one of them (engine/layering.py), in whichever order they come.

Quantization (`quantize`): the denoisers (transformer, transformer_2) quantized while loading, through diffusers'
PipelineQuantizationConfig, with the backend the name says. Each backend is an optional install and some run on
CUDA only; both are checked before anything loads. Nothing here imports torch at import time.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import TeacliError

OFFLOAD_MODES = {
    "model": "each component on the GPU only while it runs (enable_model_cpu_offload)",
    "sequential": "each layer on the GPU only for its own call (enable_sequential_cpu_offload): least memory, slowest",
    "group": "one transformer block at a time, prefetched on a CUDA stream (enable_group_offload)",
}
# Where offloading has somewhere to offload from: an accelerator with its own memory.
OFFLOAD_DEVICE_TYPES = ("cuda", "xpu", "mps", "npu")


class MemoryOptionError(TeacliError, ValueError):
    """An offload or quantization that is unknown, not installed, or not possible on this device."""


@dataclass(frozen=True)
class Quantization:
    """One way to quantize the denoisers: the backend, what it does, what it needs."""

    name: str
    backend: str  # the distribution to install, as pip names it
    module: str  # ... and the module it imports
    what: str
    cuda_only: bool = False
    min_capability: tuple[int, int] | None = None  # CUDA compute capability the kernels need


QUANTIZATIONS = {
    q.name: q
    for q in (
        Quantization("bnb-nf4", "bitsandbytes", "bitsandbytes", "bitsandbytes 4-bit NF4 weights", cuda_only=True),
        Quantization(
            "bnb-int8", "bitsandbytes", "bitsandbytes", "bitsandbytes 8-bit weights (LLM.int8)", cuda_only=True
        ),
        Quantization("torchao-int8", "torchao", "torchao", "torchao int8 weights"),
        Quantization("torchao-int8dq", "torchao", "torchao", "torchao int8 weights and activations"),
        Quantization(
            "torchao-float8",
            "torchao",
            "torchao",
            "torchao float8 weights and activations",
            cuda_only=True,
            min_capability=(8, 9),
        ),
        Quantization("quanto-int8", "optimum-quanto", "optimum.quanto", "optimum-quanto int8 weights"),
        Quantization("quanto-float8", "optimum-quanto", "optimum.quanto", "optimum-quanto float8 weights"),
        Quantization("quanto-int4", "optimum-quanto", "optimum.quanto", "optimum-quanto int4 weights"),
    )
}
# The command line's help of --offload and --quantize (Rich would read "[bnb]" as markup: escaped).
OFFLOAD_HELP = (
    "Keep weights on the CPU, moved onto the GPU as they run: model (whole components), group (a block at a "
    "time), sequential (a layer at a time: least memory, slowest)"
)
QUANTIZE_HELP = (
    f"Quantize the transformer(s) while loading: {', '.join(QUANTIZATIONS)} (bnb-*: CUDA only, pip install "
    "'teacli\\[bnb]'; the others: pip install 'teacli\\[quantize]'). bench takes several, comma-separated (none: "
    "not quantized): every row on each in turn, against the first's vanilla"
)
# The extra of pyproject.toml that installs each backend.
EXTRA_OF_BACKEND = {"bitsandbytes": "bnb", "torchao": "quantize", "optimum-quanto": "quantize"}


def check_offload(mode: str | None) -> None:
    """`offload` names one of diffusers' ways (or None: everything on the device)."""
    if mode is not None and mode not in OFFLOAD_MODES:
        raise MemoryOptionError(f"offload takes {', '.join(OFFLOAD_MODES)}, got {mode!r}", field="offload")


NOT_QUANTIZED = "none"  # what a user may type for "the weights as they are"


def check_quantize(name: str | None) -> None:
    """`quantize` names a known quantization whose backend is installed (or None, "none": the weights as they are)."""
    if name is None or name == NOT_QUANTIZED:
        return
    quantization = QUANTIZATIONS.get(name)
    if quantization is None:
        raise MemoryOptionError(f"quantize takes {', '.join(QUANTIZATIONS)} or none, got {name!r}", field="quantize")
    if not _installed(quantization.module):
        extra = EXTRA_OF_BACKEND[quantization.backend]
        raise MemoryOptionError(
            f"quantize {name} needs {quantization.backend}, which is not installed: pip install 'teacli[{extra}]'",
            field="quantize",
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing (optimum without quanto)
        return False


def check_on_device(offload: str | None, quantize: str | None, device: Any) -> None:
    """Before loading: the device can do what was asked (offloading needs an accelerator to offload from, some
    quantization kernels need CUDA or a recent GPU)."""
    if offload is not None and device.type not in OFFLOAD_DEVICE_TYPES:
        raise MemoryOptionError(
            f"offload {offload} moves weights between the CPU and a GPU; this run is on {device.type}, where they "
            "all are already: drop offload",
            field="offload",
        )
    if quantize is None:
        return
    quantization = QUANTIZATIONS[quantize]
    if quantization.cuda_only and device.type != "cuda":
        runs_anywhere = ", ".join(name for name, q in QUANTIZATIONS.items() if not q.cuda_only)
        raise MemoryOptionError(
            f"quantize {quantize} runs on CUDA GPUs only; this run is on {device.type}: use one of {runs_anywhere}",
            field="quantize",
        )
    if quantization.min_capability is not None:
        import torch

        capability = torch.cuda.get_device_capability(device)
        if capability < quantization.min_capability:
            needed = ".".join(map(str, quantization.min_capability))
            raise MemoryOptionError(
                f"quantize {quantize} needs a GPU of compute capability {needed} or newer (Ada, Hopper); this one "
                f"is {capability[0]}.{capability[1]}: use torchao-int8 or bnb-nf4",
                field="quantize",
            )


def quantization_config(name: str, denoisers: Iterable[str], dtype: Any) -> Any:
    """diffusers' PipelineQuantizationConfig quantizing each denoiser component with `name`'s backend."""
    from diffusers import PipelineQuantizationConfig

    config = _BUILDERS[name](dtype)
    return PipelineQuantizationConfig(quant_mapping=dict.fromkeys(denoisers, config))


def _bitsandbytes(**kwargs: Any) -> Callable[[Any], Any]:
    def build(dtype: Any) -> Any:
        from diffusers import BitsAndBytesConfig

        if kwargs.get("load_in_4bit"):
            return BitsAndBytesConfig(**kwargs, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        return BitsAndBytesConfig(**kwargs)

    return build


def _torchao(config_name: str) -> Callable[[Any], Any]:
    def build(dtype: Any) -> Any:
        import torchao.quantization
        from diffusers import TorchAoConfig

        return TorchAoConfig(getattr(torchao.quantization, config_name)())

    return build


def _quanto(weights: str) -> Callable[[Any], Any]:
    def build(dtype: Any) -> Any:
        from diffusers import QuantoConfig

        return QuantoConfig(weights_dtype=weights)

    return build


_BUILDERS: dict[str, Callable[[Any], Any]] = {
    "bnb-nf4": _bitsandbytes(load_in_4bit=True),
    "bnb-int8": _bitsandbytes(load_in_8bit=True),
    "torchao-int8": _torchao("Int8WeightOnlyConfig"),
    "torchao-int8dq": _torchao("Int8DynamicActivationInt8WeightConfig"),
    "torchao-float8": _torchao("Float8DynamicActivationFloat8WeightConfig"),
    "quanto-int8": _quanto("int8"),
    "quanto-float8": _quanto("float8"),
    "quanto-int4": _quanto("int4"),
}


def enable_offload(pipe: Any, mode: str, device: Any) -> None:
    """Offload the loaded pipeline's components to the CPU, onto `device` when they run."""
    if mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        import torch

        stream = device.type == "cuda"  # prefetch the next block while this one runs
        pipe.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=stream,
            record_stream=stream,
        )


def memory_description(offload: str | None, quantize: str | None) -> str | None:
    """One phrase for reports: what was offloaded and quantized (None: neither)."""
    parts = []
    if quantize is not None:
        parts.append(f"denoisers quantized: {QUANTIZATIONS[quantize].what}")
    if offload is not None:
        parts.append(f"{offload} offload")
    return ", ".join(parts) or None
