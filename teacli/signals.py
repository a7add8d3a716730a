"""Ctrl-C and termination signals, installed before anything heavy is imported.

SIGTERM (what `timeout`, docker, Slurm and Kubernetes send) and SIGHUP (a closed terminal) are raised as
`Terminated`, a KeyboardInterrupt, so every cleanup path that handles Ctrl-C (temporary files removed, nothing
half-written) handles them too; only the exit code differs (128 + the signal's number, as shells report it).
Standard library only: this module runs while torch is still being imported.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal other than Ctrl-C."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


def _swallows_exceptions(frame: Any) -> bool:
    """Whether an exception raised in `frame` would be printed as 'Exception ignored' and lost: a weakref
    callback of the import system's module locks, or a finalizer (`__del__`)."""
    code = getattr(frame, "f_code", None)
    if code is None:
        return False
    return code.co_name == "__del__" or (code.co_filename.startswith("<frozen importlib") and code.co_name == "cb")


def interrupt_for(signal_number: int) -> KeyboardInterrupt:
    """The exception a stop signal raises: KeyboardInterrupt for Ctrl-C, Terminated for the others."""
    return KeyboardInterrupt() if signal_number == signal.SIGINT else Terminated(signal_number)


def _stop(signal_number: int, frame: Any) -> None:
    if _swallows_exceptions(frame):
        # Raised here the interrupt would be lost and the run would go on half-imported: deliver it again in a
        # moment, when the main thread is back in ordinary code.
        threading.Timer(0.02, os.kill, (os.getpid(), signal_number)).start()
        return
    raise interrupt_for(signal_number)


def stop_signals() -> list[int]:
    """The signals teacli treats as a request to stop cleanly, besides SIGINT."""
    return [number for number in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if number]


_held: list[int] = []


def _note(signal_number: int, _frame: Any) -> None:
    _held.append(signal_number)


def _set_handlers(handler: Any) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGINT, *stop_signals()):
        current = signal.getsignal(number)
        if current is signal.SIG_IGN:
            continue  # started under nohup (or in the background of a script): the signal stays ignored
        signal.signal(number, handler)


def hold() -> None:
    """From the first line of the CLI until release(): note Ctrl-C, SIGTERM and SIGHUP without raising. While
    torch, diffusers and transformers import, an exception raised at a random point can be swallowed by a
    callback and leave a module half-imported (a later 'circular import' or RecursionError traceback)."""
    _held.clear()
    _set_handlers(_note)


def release() -> int | None:
    """Raise KeyboardInterrupt on SIGINT and Terminated on SIGTERM and SIGHUP from now on; the first signal that
    came while held, if any."""
    _set_handlers(_stop)
    return _held[0] if _held else None


@contextmanager
def held() -> Iterator[None]:
    """Signals noted, not raised, while the block runs (the heavy imports); the first one is raised as
    KeyboardInterrupt or Terminated when it ends."""
    hold()
    try:
        yield
    finally:
        received = release()
    if received is not None:
        raise interrupt_for(received)


def import_libraries() -> None:
    """torch, diffusers and transformers, imported with signals held until they are complete: a signal during the
    imports is raised once they are done, never a half-imported library. The CLI calls it once a command's cheap
    checks passed, so a bad option is refused in a fraction of a second."""
    import logging

    for name in IMPORT_CHATTER:  # before the imports: they speak while importing
        logging.getLogger(name).setLevel(logging.ERROR)
    with held():
        import diffusers
        import torch  # noqa: F401
        import transformers

    # Their notices while the pipeline classes import (torchao's, when installed); --verbose turns them back on
    # (teacli.models.library_logs.quiet_libraries).
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


# Loggers of libraries imported on the way (torchao, when installed, comes with a pipeline class) whose import-time
# notices (kernels built for another Python or GPU, torch deprecations inside them) say nothing about the run.
IMPORT_CHATTER = ("torchao", "torch.utils._pytree", "optimum.quanto")


def handlers() -> dict[int, Any]:
    """The handlers in place now, to put back with restore() (the CLI run in-process, by tests or a script)."""
    return {number: signal.getsignal(number) for number in (signal.SIGINT, *stop_signals())}


def restore(saved: dict[int, Any]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for number, handler in saved.items():
        if handler is not None:
            signal.signal(number, handler)


def interrupt_of(error: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt behind `error` (itself, or the cause of the Abort click raises for one)."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return error
        error = error.__cause__ or error.__context__
    return None


def exit_code(error: BaseException | None) -> int:
    """130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    interrupt = interrupt_of(error)
    if isinstance(interrupt, Terminated):
        return 128 + interrupt.signal_number
    return EXIT_INTERRUPTED


def forget_handled_interrupt() -> None:
    """CPython 3.11 remembers a KeyboardInterrupt raised inside code run by exec() (dataclasses and typing build
    methods that way while modules import) even when teacli handled it, and then kills the process with
    SIGINT at exit instead of using teacli's exit code. Running exec once more clears that note."""
    exec("pass")  # noqa: S102 - a constant string: resets CPython's unhandled-interrupt flag
