"""Writing outputs without ever leaving half a file or clobbering one the user has."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image


class OutputError(ValueError):
    """The output path cannot be used; the message says why and what to do."""


def image_extensions() -> dict[str, str]:
    Image.init()
    return dict(Image.registered_extensions())


def next_free_path(directory: Path, stem: str, suffix: str) -> Path:
    """stem-0001.png, stem-0002.png, ...: the first name not taken."""
    for number in range(1, 100_000):
        candidate = directory / f"{stem}-{number:04d}{suffix}"
        if not candidate.exists():
            return candidate
    raise OutputError(f"no free output name left in {directory}; pass --out")


def check_writable(path: Path, overwrite: bool, kind: str = "output") -> Path:
    """Fail before any work is done if `path` cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{kind} path {path} is a directory; give a file name")
    if not parent.is_dir():
        raise OutputError(f"{kind} directory {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{kind} directory {parent} is not writable; choose another path")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it or choose another path")
    return path


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=path.suffix
    )
    os.close(descriptor)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_image(image: Any, path: Path) -> None:
    image_format = image_extensions()[path.suffix.lower()]
    write_atomic(path, lambda temporary: image.save(temporary, format=image_format))


def save_json(data: Any, path: Path) -> None:
    write_atomic(path, lambda temporary: temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))
