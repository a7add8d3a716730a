"""Embedded models: tiny pipelines built offline on first use and cached on disk.

They let teacli's tests, demos and smoke runs go end to end without a model hub. Callers
always load the saved copy with `from_pretrained` rather than using the freshly built
modules: a newly constructed module is in train mode (T5 dropout would be live), while
`from_pretrained` returns it in eval mode exactly as a downloaded checkpoint would be.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import TeacliError

__all__ = [
    "BUILD_VERSION",
    "EMBEDDED_MODELS",
    "SHIPPED_MODELS",
    "LazyBuilder",
    "UnknownEmbeddedModel",
    "cache_root",
    "embedded_model_path",
]

# Part of every cached directory's name: bump it whenever a builder's output changes, so
# caches built by an older teacli are ignored instead of silently reused.
BUILD_VERSION = 1


@dataclass(frozen=True)
class LazyBuilder:
    """`module.function(directory)`, imported on first call so listing models stays cheap."""

    module: str
    function: str

    def __call__(self, directory: Path) -> None:
        getattr(importlib.import_module(self.module), self.function)(directory)


# Name -> function that writes the model into an (empty) directory.
EMBEDDED_MODELS: dict[str, Callable[[Path], None]] = {
    "tiny-flux": LazyBuilder("teacli.models.embedded.tiny_flux", "build_tiny_flux"),
    "bench-flux": LazyBuilder("teacli.models.embedded.bench_flux", "build_bench_flux"),
    "tiny-flux2-klein": LazyBuilder("teacli.models.embedded.tiny_flux2_klein", "build_tiny_flux2_klein"),
    "tiny-qwen-image": LazyBuilder("teacli.models.embedded.tiny_qwen_image", "build_tiny_qwen_image"),
    "tiny-z-image": LazyBuilder("teacli.models.embedded.tiny_z_image", "build_tiny_z_image"),
    "tiny-sd3": LazyBuilder("teacli.models.embedded.tiny_sd3", "build_tiny_sd3"),
    "tiny-wan21": LazyBuilder("teacli.models.embedded.tiny_wan21", "build_tiny_wan21"),
    "tiny-wan22": LazyBuilder("teacli.models.embedded.tiny_wan22", "build_tiny_wan22"),
    "tiny-cogvideox": LazyBuilder("teacli.models.embedded.tiny_cogvideox", "build_tiny_cogvideox"),
    "tiny-ltx": LazyBuilder("teacli.models.embedded.tiny_ltx", "build_tiny_ltx"),
}


# Models teacli trains itself and ships as package data: name -> the package holding directory `name`.
# They are read in place, never built; `python -m teacli.demo.train --variant NAME` re-creates them
# with the settings recorded in their training.json. teacli-shapes-fine is the second
# trained model: a 16x16 latent (64 tokens) and 3 + 6 blocks, for checking that cache policies generalise.
SHIPPED_MODELS: dict[str, str] = {"teacli-shapes": "teacli.demo", "teacli-shapes-fine": "teacli.demo"}


class MissingShippedModel(TeacliError, FileNotFoundError):
    """A shipped model's weights are not in this installation (a source tree without them)."""


class UnknownEmbeddedModel(TeacliError, KeyError, ValueError):
    """Raised for a name that is not in `EMBEDDED_MODELS`.

    A KeyError because it is a failed registry lookup, a ValueError because to a CLI user
    it is a bad argument value; callers may catch either.
    """

    def __init__(self, name: str) -> None:
        known = ", ".join(sorted({*EMBEDDED_MODELS, *SHIPPED_MODELS}))
        super().__init__(f"unknown embedded model {name!r}; known: {known}")

    def __str__(self) -> str:
        # KeyError's own __str__ would show the message as a quoted repr.
        return str(self.args[0])


def cache_root() -> Path:
    """Where teacli caches what it builds: $TEACLI_CACHE_DIR, else the XDG cache dir."""
    explicit = os.environ.get("TEACLI_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "teacli"


def embedded_model_path(name: str) -> Path:
    """Return the directory of embedded model `name`: shipped in the package, or built the first time."""
    if name in SHIPPED_MODELS:
        return shipped_model_path(name)
    builder = _builder(name)
    target = built_model_dir(name)
    # A directory under its final name is always complete: builds only ever appear there
    # through the atomic rename below.
    if not target.is_dir():
        _build_atomically(builder, target)
    return target


def built_model_dir(name: str) -> Path:
    """Where embedded model `name` is built (it may not be yet): the folder a pipeline loaded from it names."""
    return cache_root() / "models" / f"{name}-v{BUILD_VERSION}"


def shipped_model_path(name: str) -> Path:
    from importlib.resources import files

    path = Path(str(files(SHIPPED_MODELS[name]))) / name
    if not (path / "model_index.json").is_file():
        raise MissingShippedModel(
            f"the {name} weights are missing from {path}; reinstall teacli, or train them with "
            f"python -m teacli.demo.train --variant {name} --out {path}"
        )
    return path


def _builder(name: str) -> Callable[[Path], None]:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        raise UnknownEmbeddedModel(name) from None


def _build_atomically(builder: Callable[[Path], None], target: Path) -> None:
    """Build into a sibling temporary directory, then rename it into place.

    The temporary directory sits next to the target so the rename stays on one filesystem
    (and is therefore atomic): a concurrent reader sees either nothing or a complete model.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        builder(staging)
        try:
            os.replace(staging, target)
        except OSError:
            # Another process renamed its build into place first. Builds are deterministic,
            # so its copy is as good as ours; anything else is a real error.
            if not target.is_dir():
                raise
    finally:
        # After a successful rename this is a no-op; otherwise it removes the half-written
        # or losing copy.
        shutil.rmtree(staging, ignore_errors=True)
