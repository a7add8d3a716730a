"""How a long library call tells its caller what it is doing: warnings, loading, steps.

The library never draws anything on its own: the CLI passes a `RichProgress` that draws spinners and bars on its
console (as the report renderers print on the console they are given), a Python user may pass their own, and the
default logs the warnings and shows nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

logger = logging.getLogger("teacli")

StepCallback = Callable[[int], None]


class Progress:
    """The callbacks of one run; override any of them."""

    def warning(self, message: str) -> None:
        """A setting that runs but makes caching useless or harmful, or a value the pipeline changed."""
        logger.warning(message)

    @contextmanager
    def loading(self, description: str) -> Iterator[None]:
        """Around loading a model (seconds to minutes)."""
        yield

    @contextmanager
    def steps(self, description: str, total: int) -> Iterator[StepCallback]:
        """Around one generation of `total` denoising steps; the callback is told each finished step (from 0)."""
        yield lambda _step: None


class Quiet(Progress):
    """Says nothing at all, warnings included (the ranks of a distributed run other than rank 0)."""

    def warning(self, message: str) -> None:
        pass


class RichProgress(Progress):
    """The progress drawn on a rich console (the CLI's stderr): warnings as one line each, a spinner while loading,
    a bar per run. `runs` and `completed` are the bars of bench (a run more, labelled) and calibrate (so many done)."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def warning(self, message: str) -> None:
        from rich.markup import escape

        one_line = escape(" ".join(str(message).split()))
        self.console.print(f"[bold yellow]warning:[/] {one_line}", highlight=False, markup=True, soft_wrap=True)

    @contextmanager
    def loading(self, description: str) -> Iterator[None]:
        with self.console.status(description):
            yield

    def loading_model(self, name: str) -> AbstractContextManager[None]:
        return self.loading(f"loading {name} ...")

    @contextmanager
    def steps(self, description: str, total: int) -> Iterator[StepCallback]:
        with self._bar(description, total) as update:
            yield lambda step: update(completed=step + 1)

    @contextmanager
    def runs(self, description: str, total: int) -> Iterator[Callable[[str], None]]:
        with self._bar(description, total) as update:
            yield lambda label: update(advance=1, description=label)

    @contextmanager
    def completed(self, description: str, total: int) -> Iterator[Callable[[int, str | None], None]]:
        with self._bar(description, total) as update:
            yield lambda done, label: update(completed=done, **({"description": label} if label else {}))

    @contextmanager
    def _bar(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """A transient bar of `total`; yields its update (rich's Progress.update of its one task)."""
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Bars(*columns, console=self.console, transient=True) as bars:
            task = bars.add_task(description, total=total)
            yield lambda **change: bars.update(task, **change)
