"""What generate, bench and calibrate show while the library works: a spinner while loading, a bar per run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..generation import progress as library_progress
from ..generation.preparation import CacheOptions, LoadOptions
from ..generation.session import Session, check_pipeline_takes, input_image, resolve
from ..generation.session import open_session as _open_session
from ..models.catalog import Preset
from ._app import print_warning, stderr
from ._options import Device, DType

__all__ = ["RichProgress", "Session", "check_pipeline_takes", "input_image", "open_session", "resolve", "step_progress"]


@contextmanager
def step_progress(description: str, total: int) -> Iterator[Progress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        yield progress


class RichProgress(library_progress.Progress):
    """The library's progress on stderr: warnings as one line each, a spinner while loading, a bar per run."""

    def warning(self, message: str) -> None:
        print_warning(message)

    @contextmanager
    def loading(self, description: str) -> Iterator[None]:
        with stderr.status(description):
            yield

    @contextmanager
    def steps(self, description: str, total: int) -> Iterator[library_progress.StepCallback]:
        with step_progress(description, total) as progress:
            task = progress.add_task(description, total=total)
            yield lambda step: progress.update(task, completed=step + 1)


def open_session(
    preset: Preset,
    device: Device,
    dtype: DType,
    coefficients: tuple[float, ...] | None = None,
    load: LoadOptions | None = None,
    cache: CacheOptions | None = None,
) -> Any:
    """The preset's pipeline loaded (teacli.generation.session.open_session) behind a spinner."""
    return _open_session(preset, device.value, dtype.value, coefficients, load, cache, RichProgress())
