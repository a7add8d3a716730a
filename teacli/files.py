"""Reading the small files a user points teacli at (presets, prompts files, manifests) without ever blocking or
running out of memory: regular files only, and only up to a bound.

Opening a FIFO for reading waits for a writer, and `/dev/zero` never ends, so anything but a regular file is
refused before it is opened, and checked again once open (it could have been swapped meanwhile).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotRegularFile(OSError):
    """The path is a directory, a FIFO, a socket or a device."""

    def __init__(self, path: Path, mode: int) -> None:
        super().__init__(f"{path} is {file_kind(mode)}, not a regular file")
        self.mode = mode
        self.kind = file_kind(mode)


class TooLarge(OSError):
    """The file holds more than the reader's bound."""


def file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them: FileNotFoundError, NotRegularFile, TooLarge,
    or the OSError that reading gave."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, mode)
    # O_NONBLOCK: should the file become a FIFO after the check, opening it still returns at once.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(descriptor, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        data = file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{path} is larger than {limit} bytes")
    return data
