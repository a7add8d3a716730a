"""What teacli runs on, for a bug report (`teacli env`): the versions that matter, the device and dtype teacli
would pick, and which optional extras are installed."""

from __future__ import annotations

import platform
import sys
from importlib import metadata as distributions
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# The libraries whose versions decide how a run behaves.
LIBRARIES = ("torch", "diffusers", "transformers", "accelerate")
# Each optional extra (pyproject.toml) and the distributions it installs.
EXTRAS = {
    "video": ("imageio", "imageio-ffmpeg"),
    "plot": ("matplotlib",),
    "lora": ("peft",),
    "peers": ("cache-dit",),
    "quantize": ("torchao", "optimum-quanto"),
    "bnb": ("bitsandbytes",),
}


def version(distribution: str) -> str | None:
    """The installed version of a distribution, read from its metadata (nothing is imported); None if absent."""
    try:
        return distributions.version(distribution)
    except distributions.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Everything `teacli env` shows, as plain JSON values."""
    from . import __version__

    return {
        "teacli": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        **{library: version(library) for library in LIBRARIES},
        **_accelerator(),
        "extras": {
            extra: {"installed": all(version(name) for name in names), "packages": {n: version(n) for n in names}}
            for extra, names in EXTRAS.items()
        },
    }


def _accelerator() -> dict[str, Any]:
    """torch's CUDA build, the GPU it sees, and the device and dtype `--device auto --dtype auto` pick."""
    if version("torch") is None:
        return {"torch_cuda": None, "gpu": None, "device": None, "dtype": None}
    import torch

    from .models.devices import pick_device, pick_dtype

    device = pick_device("auto")
    gpu = None
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        gpu = f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} visible"
    dtype = str(pick_dtype("auto", device)).removeprefix("torch.")
    return {"torch_cuda": torch.version.cuda, "gpu": gpu, "device": device.type, "dtype": dtype}


def render_environment(data: dict[str, Any], console: Console) -> None:
    """Two columns that read at 80: what, and its version or state."""
    table = Table(title="teacli environment", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key in ("teacli", "python", "executable", "platform", *LIBRARIES):
        table.add_row(key, _shown(data[key], "not installed"))
    table.add_row("torch CUDA", _shown(data["torch_cuda"], "none (a CPU build of torch)"))
    table.add_row("GPU", _shown(data["gpu"], "none visible"))
    table.add_row("device (auto)", _shown(data["device"], "-"))
    table.add_row("dtype (auto)", _shown(data["dtype"], "-"))
    for extra, state in data["extras"].items():
        packages = ", ".join(f"{name} {found}" for name, found in state["packages"].items() if found)
        missing = f"no: pip install 'teacli[{extra}]'"
        table.add_row(f"extra {extra}", escape(f"yes ({packages})" if state["installed"] else missing))
    console.print(table)


def _shown(value: Any, absent: str) -> str:
    return escape(str(value)) if value is not None else absent
