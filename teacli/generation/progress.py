"""How a long library call tells its caller what it is doing: warnings, loading, steps.

The library never draws anything on its own: the CLI passes a `RichProgress` that draws spinners and bars on its
console (as the report renderers print on the console they are given), a Python user may pass their own, and the
default logs the warnings and shows nothing else. On a console that is not a terminal (a CI log, a file) spinners
and bars would show nothing until the end, so `RichProgress` logs plain lines there instead (INFO records of the
"teacli" logger, which the CLI shows on the same console): one as each stage starts and ends, and one now and then
during a long one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

logger = logging.getLogger("teacli")

StepCallback = Callable[[int], None]
# On a console that is not a terminal, the most seconds a long stage goes without a line (a 20-minute video).
PLAIN_INTERVAL = 30.0


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
    a bar per run; plain lines instead where the console is not a terminal (PlainLines). `runs` and `completed`
    are the bars of bench (a run more, labelled) and calibrate (so many done)."""

    def __init__(self, console: Any, *, interval: float = PLAIN_INTERVAL) -> None:
        self.console = console
        self.interval = interval  # seconds between two plain lines of one long stage

    @property
    def plain(self) -> bool:
        """Whether to write plain lines: rich draws nothing live on a console that is not a terminal."""
        return not self.console.is_terminal

    def warning(self, message: str) -> None:
        from rich.markup import escape

        one_line = escape(" ".join(str(message).split()))
        self.console.print(f"[bold yellow]warning:[/] {one_line}", highlight=False, markup=True, soft_wrap=True)

    @contextmanager
    def loading(self, description: str) -> Iterator[None]:
        if self.plain:
            with PlainLines(description, None, self.interval):
                yield
            return
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
        if self.plain:
            with PlainLines(description, total, self.interval) as lines:
                yield lines.update
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Bars(*columns, console=self.console, transient=True) as bars:
            task = bars.add_task(description, total=total)
            yield lambda **change: bars.update(task, **change)


class PlainLines:
    """One stage as plain lines for a log, each an INFO record of the "teacli" logger: a line as it starts, one as it
    ends with its time, and between them a line when its label changes (bench's runs, calibrate's prompts) or
    `interval` seconds have passed. `update` takes rich's Progress.update arguments (completed, advance,
    description), so it stands in for a bar."""

    def __init__(self, description: str, total: int | None, interval: float) -> None:
        self.title = self.label = description  # the stage's name; the label of its latest part
        self.total = total
        self.interval = interval
        self.done = 0
        self.started = self.last = time.monotonic()

    def __enter__(self) -> PlainLines:
        self._say(self.title if self.total is None else f"{self.title}: {self._count()}")
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is not None:
            return  # the error or the interrupt says what happened
        count = "" if self.total is None else f" {self._count()}"
        self._say(f"{self.title.removesuffix(' ...')}:{count} done in {self._elapsed()}")

    def update(self, *, completed: int | None = None, advance: int = 0, description: str | None = None) -> None:
        self.done = (self.done if completed is None else completed) + advance
        relabelled = description is not None and description != self.label
        self.label = description or self.label
        if relabelled or time.monotonic() - self.last >= self.interval:
            self._say(f"{self.label}: {self._count()} ({self._elapsed()})")

    def _count(self) -> str:
        return f"{self.done}/{self.total}"

    def _elapsed(self) -> str:
        seconds = time.monotonic() - self.started
        return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"

    def _say(self, line: str) -> None:
        self.last = time.monotonic()
        logger.info(line)
