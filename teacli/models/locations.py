"""Where a model's files are: a folder on disk, the local Hugging Face cache, or the hub; ModelError."""

from __future__ import annotations

from pathlib import Path

from ..errors import TeacliError
from ..limits import clip


class ModelError(TeacliError, ValueError):
    """The model could not be resolved or loaded; the message says what to do."""


NO_REMOTE_CODE = "teacli never runs code from a model repository"
NOT_CACHED = "is not in the local Hugging Face cache; run once without --offline to download it"


def short_reason(text: object) -> str:
    """The first non-empty line of a library's message, cut to one short line (limits.clip)."""
    return clip(next((line for line in str(text).splitlines() if line.strip()), ""))


def hub_files(repo_id: str) -> list[str] | None:
    """The file list of a hub repository, or None when it cannot be had (offline, unreachable, not a repo)."""
    try:
        from huggingface_hub import list_repo_files

        return list_repo_files(repo_id)
    except Exception:  # noqa: BLE001 - any failure only means the listing is unknown
        return None


def is_local(location: str) -> bool:
    """A directory on disk: it is read in place, and nothing about it is asked of the hub."""
    return Path(location).expanduser().is_dir()


def cached_snapshot(repo_id: str, revision: str = "main") -> Path | None:
    """The folder the local Hugging Face cache holds for `repo_id` (its files may be incomplete), or None.

    Reads the disk only. Offline runs load from this folder as from any local directory: huggingface_hub's own
    calls, even with local_files_only, may go online (2.x fetches an agent registry to build its user agent).
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None  # not a hub id (a file path, say): nothing of it can be cached
    repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    ref = repo / "refs" / revision
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text(encoding="utf-8").strip()
        return snapshot if snapshot.is_dir() else None
    snapshots = [p for p in (repo / "snapshots").glob("*") if p.is_dir()]
    return snapshots[0] if len(snapshots) == 1 else None


def on_disk(location: str, offline: bool, what: str) -> tuple[str, bool]:
    """(where to load `location` from, whether that is a folder on disk); offline, a hub id becomes its cached
    folder, or a ModelError saying it is not cached (`what` names it in that message)."""
    if is_local(location):
        return location, True
    if not offline:
        return location, False
    snapshot = cached_snapshot(location)
    if snapshot is None:
        raise ModelError(f"{what} {NOT_CACHED}")
    return str(snapshot), True
