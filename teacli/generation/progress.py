"""How a long library call tells its caller what it is doing: warnings, loading, steps.

The library never draws anything; the CLI passes a `Progress` that draws rich spinners and bars, a Python user
may pass their own, and the default logs the warnings and shows nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
