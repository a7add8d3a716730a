"""A Ctrl-C while a library loads weights stays a Ctrl-C, whatever the library turned it into."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class InterruptWatch:
    """Whether a Ctrl-C (SIGINT) arrived while a library was loading weights."""

    def __init__(self) -> None:
        self.seen = False


@contextmanager
def noting_interrupts() -> Iterator[InterruptWatch]:
    """Note every SIGINT while the block runs, then let the handler in place handle it as before.

    A library that turns the KeyboardInterrupt into another exception (or raises one while it unwinds) must
    not make a Ctrl-C read as a broken model: raise_if_interrupted turns such an error back into one.
    """
    watch = InterruptWatch()
    handler = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
        if callable(previous):

            def handler(signum, frame):
                watch.seen = True
                return previous(signum, frame)

            try:
                signal.signal(signal.SIGINT, handler)
            except (ValueError, OSError):  # not the main interpreter
                handler = None
    try:
        yield watch
    finally:
        if handler is not None and signal.getsignal(signal.SIGINT) is handler:
            signal.signal(signal.SIGINT, previous)


def error_chain(error: BaseException) -> list[BaseException]:
    """`error` and the exceptions it was raised from or while handling."""
    seen: list[BaseException] = []
    while error is not None and not any(error is e for e in seen):
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def raise_if_interrupted(error: BaseException, watch: InterruptWatch | None = None) -> None:
    """Raise KeyboardInterrupt when `error` came out of a Ctrl-C: one arrived while loading, or `error` was
    raised while a KeyboardInterrupt unwound. Never a ModelError for the user's own Ctrl-C."""
    if (watch is not None and watch.seen) or any(isinstance(e, KeyboardInterrupt) for e in error_chain(error)):
        raise KeyboardInterrupt from error
