"""What generate, bench and calibrate show while the library works: a spinner while loading, a bar per run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..generation import progress as library_progress
from ._app import print_warning, stderr


@contextmanager
def step_progress(description: str, total: int) -> Iterator[Progress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        yield progress


def loading(name: str) -> AbstractContextManager[None]:
    """A spinner while `name` loads."""
    return stderr.status(f"loading {name} ...")


@contextmanager
def bar(description: str, total: int) -> Iterator[Callable[[str], None]]:
    """A bar of `total` runs (bench): each call is one run more, labelled."""
    with step_progress(description, total) as progress:
        task = progress.add_task(description, total=total)
        yield lambda label: progress.update(task, advance=1, description=label)


@contextmanager
def completed_bar(description: str, total: int) -> Iterator[Callable[[int, str | None], None]]:
    """A bar of `total` steps (calibrate): each call says how many are done, and maybe a new label."""
    with step_progress(description, total) as progress:
        task = progress.add_task(description, total=total)
        yield lambda completed, label: progress.update(
            task, completed=completed, **({"description": label} if label else {})
        )


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
