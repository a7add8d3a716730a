"""The JSONL manifest of a prompts run: one line per output, written whole, read back strictly.

A single process appends to it as it goes; under torch.distributed rank r appends to its own part file
(manifest.rank{r}.jsonl) and rank 0 merges the parts at the end. Lines are written whole (flushed and synced one
at a time), so an interrupted run leaves only complete lines, and a later line for the same index replaces an
earlier one. A line that is not one teacli wrote is the user's, and is never rewritten or truncated.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..files import NotRegularFile, TooLarge, read_regular_file
from ..generation.output import sigint_deferred, write_atomic
from .prompts import PromptsError


class ManifestError(PromptsError):
    """The manifest cannot be used with these prompts; the message says which line and what to do."""


def part_path(manifest: Path, rank: int) -> Path:
    """Where rank `rank` records what it made during a distributed run."""
    return manifest.with_name(f"{manifest.stem}.rank{rank}{manifest.suffix}")


def part_paths(manifest: Path) -> list[Path]:
    """Every part file of `manifest` on disk (this run's or an interrupted one's), by rank."""
    pattern = re.compile(rf"{re.escape(manifest.stem)}\.rank(\d+){re.escape(manifest.suffix)}")
    found = []
    if manifest.parent.is_dir():
        for path in manifest.parent.iterdir():
            match = pattern.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


# A manifest holds one short line per output; one this large is not a manifest.
MAX_MANIFEST_BYTES = 512 * 2**20
# The fields every line teacli writes has (manifest_entry); a user's JSONL lacks most of them.
MANIFEST_FIELDS = frozenset({"index", "prompt", "seed", "options", "settings", "file", "computed", "calls"})


def manifest_line(entry: Mapping[str, Any]) -> str:
    """One manifest line exactly as teacli writes it (without its newline)."""
    return json.dumps(dict(entry), ensure_ascii=False)


def parse_manifest_line(line: str) -> dict[str, Any] | None:
    """The entry of a line teacli wrote, or None: it must carry teacli's fields and read back to the same text,
    so a user's JSON lines (reformatted, other fields) are never taken for teacli's and rewritten."""
    try:
        entry = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(entry, dict) or not MANIFEST_FIELDS <= entry.keys() or not isinstance(entry["index"], int):
        return None
    return entry if manifest_line(entry) == line else None


def manifest_bytes(path: Path) -> bytes | None:
    """A manifest's bytes, None when it does not exist; ManifestError unless it is a readable regular file."""
    try:
        return read_regular_file(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        return None
    except NotRegularFile:
        raise ManifestError(
            f"manifest {path} is not a regular file (a folder, device or pipe); pick another --manifest"
        ) from None
    except TooLarge:
        raise ManifestError(f"manifest {path} is larger than any teacli manifest; pick another --manifest") from None
    except OSError as error:
        raise ManifestError(f"manifest {path} cannot be read ({error.strerror}); pick another --manifest") from None


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The entries of a manifest (or part) file; [] when missing. A last line that is the start of one of
    teacli's lines (an interrupted write) is ignored; any line that is not teacli's is a ManifestError naming it."""
    data = manifest_bytes(Path(path))
    if data is None:
        return []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError(f"manifest {path} cannot be read ({error.reason}); pick another --manifest") from None
    lines = text.split("\n")
    tail = lines.pop()  # after the last newline: empty, a whole line missing its newline, or a line cut short
    kind = tail_kind(tail.encode("utf-8")) if tail else "cut"
    if kind == "line":
        lines.append(tail)
    elif kind == "foreign":
        raise ManifestError(
            f"manifest {path} line {len(lines) + 1} is not a teacli manifest line; pick another --manifest or --out-dir"
        )
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        entry = parse_manifest_line(line)
        if entry is None:
            raise ManifestError(
                f"manifest {path} line {number} is not a teacli manifest line; pick another --manifest or --out-dir"
            )
        entries.append(entry)
    return entries


def recorded_entries(manifest: Path) -> dict[int, dict[str, Any]]:
    """What the manifest and any part files left by ranks record, by index; a later line for an index wins."""
    done: dict[int, dict[str, Any]] = {}
    for path in (manifest, *part_paths(manifest)):
        for entry in read_manifest(path):
            done[entry["index"]] = entry
    return done


def entry_path(entry: Mapping[str, Any], manifest: Path) -> Path:
    """The output an entry names (relative to the manifest's folder)."""
    return manifest.parent / entry["file"]


def merge_manifest(manifest: Path, entries: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Rewrite the manifest (atomically) with what it and its part files record plus `entries`, one line per
    index in index order, later records winning; then remove the part files it took in."""
    parts = part_paths(manifest)
    merged = recorded_entries(manifest)
    for entry in entries:
        merged[entry["index"]] = dict(entry)
    lines = [merged[index] for index in sorted(merged)]
    text = "".join(manifest_line(entry) + "\n" for entry in lines)
    # Replacing is safe: every line was read back as teacli's own above (read_manifest refuses anything else).
    # Through a symbolic link the file it points to is rewritten, and the user's link stays a link.
    target = manifest.resolve() if manifest.is_symlink() else manifest
    write_atomic(target, lambda temporary: temporary.write_text(text, encoding="utf-8"), overwrite=True)
    for part in parts:
        part.unlink(missing_ok=True)
    return lines


# Every manifest line starts so (manifest_entry puts "index" first): what an interrupted write leaves of one.
CUT_LINE = re.compile(rb'\{"index": [0-9]+(, .*)?')


def tail_kind(tail: bytes) -> str:
    """What the bytes after a manifest's last newline are: "line" (one of teacli's lines, whole but for its
    newline), "cut" (the start of one, which an interrupted write left) or "foreign" (anything else: the
    user's, never to be truncated)."""
    try:
        text = tail.decode("utf-8")
    except UnicodeDecodeError:
        text = None  # a write cut inside a character
    if text is not None and parse_manifest_line(text) is not None:
        return "line"
    if text is not None:
        try:
            json.loads(text)
            return "foreign"  # whole JSON, but not teacli's line
        except (json.JSONDecodeError, RecursionError):
            pass
    return "cut" if CUT_LINE.fullmatch(tail) else "foreign"


class ManifestWriter:
    """Appends whole lines to a manifest or part file: each flushed and synced, Ctrl-C held while it is written."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: Any = None  # opened on the first line: a run that makes nothing leaves no manifest behind

    def _open(self) -> None:
        self._file = open(self.path, "a+b")  # noqa: SIM115 - kept open for the run, closed by close()
        self._end_last_line()

    def _end_last_line(self) -> None:
        """A line an interrupted run cut short would glue onto the next one: cut it off, but only when it is
        the start of a line teacli writes (a whole line only missing its newline gets one); any other bytes are
        the user's and are never truncated."""
        size = self._file.seek(0, os.SEEK_END)
        if size == 0:
            return
        self._file.seek(0)
        data = self._file.read()
        if data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        kind = tail_kind(data[start:])
        if kind == "foreign":
            self.close()
            line = data.count(b"\n") + 1
            raise ManifestError(
                f"manifest {self.path} line {line} is not a teacli manifest line; pick another --manifest or --out-dir"
            )
        if kind == "line":
            self._file.write(b"\n")
        else:
            self._file.truncate(start)
        self._file.seek(0, os.SEEK_END)

    def append(self, entry: Mapping[str, Any]) -> None:
        if self._file is None:
            self._open()
        line = (manifest_line(entry) + "\n").encode("utf-8")
        with sigint_deferred():
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
