"""Writing outputs without ever leaving half a file or clobbering one the user has."""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import TeacliError

Writer = Callable[[Path], None]


class OutputError(TeacliError, ValueError):
    """The output path cannot be used; the message says why and what to do."""


def image_extensions() -> dict[str, str]:
    Image.init()
    return dict(Image.registered_extensions())


def check_writable(path: Path, overwrite: bool, kind: str = "output") -> Path:
    """Fail before any work is done if `path` cannot be written."""
    parent = path.parent
    if path.is_dir():
        raise OutputError(f"{kind} path {path} is a directory; give a file name")
    if not parent.is_dir():
        raise OutputError(f"{kind} directory {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{kind} directory {parent} is not writable; choose another path")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it or choose another path")
    return path


def temporary_beside(path: Path) -> Path:
    """An empty new file `.NAME.RANDOM.SUFFIX` in the same directory, so the final rename is atomic.

    Created with mode 0o666 less the umask (mkstemp's 0o600 would make every output private to its owner);
    when replacing a file, its mode is kept."""
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}{path.suffix}"
        try:
            descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(descriptor)
        try:
            os.chmod(candidate, os.stat(path).st_mode & 0o7777)
        except OSError:
            pass  # no file to replace (or not ours to read): keep the umask's mode
        return candidate
    raise OutputError(f"cannot create a temporary file in {path.parent}; check the directory")


def write_atomic(path: Path, write: Writer, overwrite: bool = False) -> None:
    """Write to a temporary file beside `path`, then rename it into place.

    An existing `path` (even one that appeared while `write` ran) is never replaced unless overwrite=True (the
    user's --overwrite): OutputError, and nothing is left behind."""
    write_atomic_group([(path, write)], overwrite)


def write_atomic_group(files: Sequence[tuple[Path, Writer]], overwrite: bool = False) -> None:
    """Write several files that belong together (an output and its metadata sidecar): all of them to
    temporary files first, then every rename at once, so an error or Ctrl-C while writing leaves none of
    them and no temporary file behind."""
    temporaries: list[Path] = []
    try:
        for path, write in files:
            temporaries.append(temporary_beside(path))
            write(temporaries[-1])
        with sigint_deferred():
            _commit([(temporary, path) for temporary, (path, _) in zip(temporaries, files)], overwrite)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)  # renamed ones are gone already


# Every file this process put in place, in order: what an interrupted or failed command says it wrote.
WRITTEN: list[Path] = []


def written_summary() -> str:
    """'nothing was written', or 'wrote only A, B' (complete files this process put in place)."""
    return f"wrote only {', '.join(map(str, WRITTEN))}" if WRITTEN else "nothing was written"


def _commit(renames: list[tuple[Path, Path]], overwrite: bool) -> None:
    if overwrite:
        for temporary, path in renames:
            os.replace(temporary, path)
            WRITTEN.append(path)
        return
    placed: list[Path] = []
    try:
        for temporary, path in renames:
            _place_new(temporary, path)
            placed.append(path)
    except BaseException:
        for path in placed:  # ours, made a moment ago: the group is all or nothing
            path.unlink(missing_ok=True)
        raise
    WRITTEN.extend(placed)


def _place_new(temporary: Path, path: Path) -> None:
    """Rename without replacing: a hard link fails if `path` exists, where os.replace would clobber it."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it or choose another path") from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise OutputError(f"{path} already exists; pass --overwrite to replace it or choose another path") from None
        os.replace(temporary, path)
        return
    temporary.unlink()


# Held back while a group of files is committed: Ctrl-C and the signals that ask a process to stop.
DEFERRED_SIGNALS = tuple(
    number for number in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if number
)


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (and SIGTERM, SIGHUP) for the few renames that commit a group, so it is never half
    committed; the signal is acted on once they are done. Only the main thread can change signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.getsignal(number) for number in DEFERRED_SIGNALS}
    for number, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(number, lambda number, _frame: received.append(number))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received:
        number, handler = received[0], previous[received[0]]
        if callable(handler):
            handler(number, None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(number)


def save_json(data: Any, path: Path, overwrite: bool = False) -> None:
    write_atomic(path, json_writer(data), overwrite)


def json_writer(data: Any) -> Writer:
    text = json.dumps(data, indent=2) + "\n"
    return lambda temporary: temporary.write_text(text, encoding="utf-8")
