"""RichProgress on a console that is not a terminal (a CI log, a file): plain lines as each stage starts and ends,
and while a long one runs, instead of spinners and bars that would show nothing until the end."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from teacli.generation import progress as progress_module
from teacli.generation.progress import RichProgress


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def logged():
    """teacli's log records, as the CLI shows them on its stderr console (generation.progress logs plain lines)."""
    logger = logging.getLogger("teacli")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def clock(monkeypatch):
    """A clock the test moves: seconds since the stage began."""
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    return now


def log_console() -> Console:
    return Console(file=io.StringIO(), width=80)  # a file: not a terminal


def test_a_terminal_gets_spinners_and_a_log_gets_lines():
    assert RichProgress(log_console()).plain
    assert RichProgress(Console(file=io.StringIO(), force_terminal=True)).plain is False


def test_loading_is_a_line_as_it_starts_and_one_as_it_ends(logged, clock):
    progress = RichProgress(log_console())
    with progress.loading_model("teacli-shapes"):
        assert logged == ["loading teacli-shapes ..."]  # said before the seconds of loading, not after
        clock[0] += 2.5
    assert logged == ["loading teacli-shapes ...", "loading teacli-shapes: done in 2.5 s"]


def test_steps_are_lines_at_the_start_the_end_and_every_interval(logged, clock):
    progress = RichProgress(log_console(), interval=30)
    with progress.steps("teacache@0.8", 50) as step:
        for index in range(50):
            clock[0] += 1.5  # 75 s in all: a line at 30 s and at 60 s
            step(index)
    assert logged == [
        "teacache@0.8: 0/50",
        "teacache@0.8: 20/50 (30.0 s)",
        "teacache@0.8: 40/50 (1 min 00 s)",
        "teacache@0.8: 50/50 done in 1 min 15 s",
    ]


def test_runs_get_a_line_each_time_the_label_changes(logged, clock):
    progress = RichProgress(log_console())
    with progress.runs("bench", 4) as run:
        for label in ("warm-up teacache@0.2", "teacache@0.2", "teacache@0.2", "teacache@0.8"):
            run(label)
    assert logged == [
        "bench: 0/4",
        "warm-up teacache@0.2: 1/4 (0.0 s)",
        "teacache@0.2: 2/4 (0.0 s)",
        "teacache@0.8: 4/4 (0.0 s)",
        "bench: 4/4 done in 0.0 s",
    ]


def test_completed_counts_and_labels(logged, clock):
    progress = RichProgress(log_console())
    with progress.completed("calibrating", 6) as done:
        done(3, "prompt 1/2")
        done(6, "prompt 2/2")
    assert logged[1:] == ["prompt 1/2: 3/6 (0.0 s)", "prompt 2/2: 6/6 (0.0 s)", "calibrating: 6/6 done in 0.0 s"]


def test_a_stage_that_fails_says_no_done(logged, clock):
    progress = RichProgress(log_console())
    with pytest.raises(RuntimeError), progress.loading("loading flux-dev ..."):
        raise RuntimeError("the error says what happened")
    assert logged == ["loading flux-dev ..."]


def test_a_log_console_draws_nothing_itself_and_warnings_stay_one_line(logged):
    console = log_console()
    progress = RichProgress(console)
    with progress.steps("teacache@0.8", 2) as step:
        step(0)
        step(1)
    progress.warning("a [plot] warning\nover two lines")
    assert console.file.getvalue() == "warning: a [plot] warning over two lines\n"


def test_a_terminal_logs_no_lines(logged):
    progress = RichProgress(Console(file=io.StringIO(), force_terminal=True, width=80))
    with progress.loading_model("teacli-shapes"), progress.steps("teacache@0.8", 2) as step:
        step(0)
        step(1)
    assert logged == []
