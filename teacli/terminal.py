"""What a command writes to the terminal beyond its tables: a JSON report on a stdout kept for it alone, a stdout
that can no longer be written, one short line for a failure nobody foresaw, and leaving at once when done.

The CLI (teacli.cli._app) decides what to say; this module does the file-descriptor work, which needs no part
of teacli above the leaf modules.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any, NoReturn, TextIO

from .errors import is_out_of_memory
from .limits import clip

# Where the JSON report goes while stdout is reserved for it (reserved_stdout), else None: sys.stdout.
_json_stream: TextIO | None = None


def strict_json(data: Any) -> str:
    """`data` as strict JSON text: a float that is not finite (an infinite PSNR: identical outputs) becomes null."""

    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value

    return json.dumps(finite(data), indent=2, allow_nan=False) + "\n"


def json_stream() -> TextIO | None:
    """Where a JSON report is written now: the real stdout, also while it is reserved; None when it is closed."""
    return _json_stream or sys.stdout


@contextmanager
def reserved_stdout() -> Iterator[None]:
    """Until the block ends, everything written to stdout (a library's print or logger, C code holding the
    descriptor) goes to stderr, and json_stream() is the real stdout: it carries the JSON report alone."""
    global _json_stream

    sys.stdout.flush()
    try:
        descriptor = sys.stdout.fileno()
        sys.stderr.flush()
        error_descriptor = sys.stderr.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        descriptor = None  # an in-memory stdout (tests): redirecting the Python object is enough
    if descriptor is None:
        _json_stream = sys.stdout
        try:
            with redirect_stdout(sys.stderr):
                yield
        finally:
            _json_stream = None
        return
    # At the descriptor level, so loggers and C code holding the original stdout are redirected too.
    saved = os.dup(descriptor)
    os.dup2(error_descriptor, descriptor)
    _json_stream = open(saved, "w", encoding="utf-8", closefd=True)  # noqa: SIM115 - closed below
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
        except OSError:
            pass
        os.dup2(saved, descriptor)
        stream, _json_stream = _json_stream, None
        try:
            stream.close()
        except OSError:
            pass


def silence_stdout() -> None:
    """Point stdout at /dev/null once it cannot be written, so Python's own flush at exit prints no traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def describe_failure(error: BaseException) -> str:
    """One line for a failure teacli did not foresee: what failed and what to do (a closed pipe is the caller's
    to word: it knows what was written)."""
    reason = short_reason(error)
    if is_out_of_memory(error):
        return (
            f"out of memory ({reason}); use a smaller --height/--width/--frames/--num-images, --dtype bfloat16, "
            "or --cache-device cpu (--debug shows where)"
        )
    if isinstance(error, OSError):
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        if error.errno == errno.ENOSPC:
            where = where or " (writing the report, or a file)"
            return f"no space left on the device{where}; free some space or write elsewhere; nothing was replaced"
        return f"{error.strerror or reason}{where}; check the path and its permissions (--debug shows the traceback)"
    return (
        f"unexpected {type(error).__name__}: {reason}; "
        "run again with --debug for the traceback and report it (teacli, diffusers and torch versions help)"
    )


def short_reason(error: BaseException) -> str:
    """A library's message cut to one short line (limits.clip): never an unbounded value."""
    return clip(str(error)) or type(error).__name__


def flush_stdout() -> str | None:
    """Flush stdout: None when done, else why it failed; stdout then points at /dev/null, so Python's own flush at
    exit cannot print a second traceback."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
        return None
    except OSError as error:
        silence_stdout()
        return str(error.strerror or error)


def leave(code: int) -> NoReturn:
    """Flush what stdout and stderr still hold, then end the process at once with `code`: no interpreter clean-up
    (unloading torch and diffusers takes seconds, with Python's default signal handlers back in place)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
