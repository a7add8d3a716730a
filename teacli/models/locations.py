"""Where a model's files are: a folder on disk, the local Hugging Face cache, or the hub; ModelError."""

from __future__ import annotations

import socket
from pathlib import Path

from ..errors import TeacliError
from ..limits import clip
from .interrupts import error_chain


class ModelError(TeacliError, ValueError):
    """The model could not be resolved or loaded; the message says what to do."""


NO_REMOTE_CODE = "teacli never runs code from a model repository"
NOT_CACHED = "is not in the local Hugging Face cache; run once without --offline to download it"


HUB_LOGIN = "hf auth login"
# The HTTP clients huggingface_hub has used (httpx since 1.0, requests before) and their network errors' classes.
HTTP_CLIENTS = frozenset({"httpx", "httpcore", "requests", "urllib3"})
NETWORK_ERRORS = frozenset({"NetworkError", "ConnectError", "TimeoutException", "ConnectionError", "Timeout"})


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


def hub_failure(error: BaseException, repo: str) -> ModelError | None:
    """teacli's own line for a hub model that could not be had (gated, not on the hub, or the hub out of reach with
    the files not cached), read from huggingface_hub's exception types wherever diffusers or transformers wrapped
    them; None when the failure is about something else (the files themselves, say)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    chain = error_chain(error)
    if any(isinstance(link, GatedRepoError) for link in chain):
        return ModelError(
            f"{repo} is gated on the Hugging Face Hub: accept its licence on https://huggingface.co/{repo}, "
            f"log in with `{HUB_LOGIN}` (or set HF_TOKEN), then run again"
        )
    if any(isinstance(link, RepositoryNotFoundError) for link in chain):
        return ModelError(
            f"{repo} is not on the Hugging Face Hub, or is private: check the name (`teacli list-models` shows the "
            f"presets); for a private model log in with `{HUB_LOGIN}`"
        )
    if any(isinstance(link, OfflineModeIsEnabled) for link in chain):
        return _not_downloaded(repo, "HF_HUB_OFFLINE is set")
    if any(isinstance(link, LocalEntryNotFoundError) or _is_network_error(link) for link in chain):
        return _not_downloaded(repo, "the Hugging Face Hub could not be reached")
    return None


def _not_downloaded(repo: str, why: str) -> ModelError:
    return ModelError(
        f"{repo} is not in the local Hugging Face cache and {why}: download it first with `hf download {repo}` "
        f"(or run online); a gated model also needs its licence accepted and `{HUB_LOGIN}`"
    )


def _is_network_error(error: BaseException) -> bool:
    """A connection or timeout error: Python's own (DNS included), or an HTTP client's, matched by class name so
    that whichever client (and version: httpx, httpx2, requests) huggingface_hub uses needs no import here."""
    if isinstance(error, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    return any(
        cls.__module__.split(".")[0].rstrip("0123456789") in HTTP_CLIENTS and cls.__name__ in NETWORK_ERRORS
        for cls in type(error).__mro__
    )
