"""Weight files checked before and after a load: damaged safetensors files, and pickle-only components.

Headers and file listings only, so the checks are cheap even for large models; what a library's error message
says about a file is only a hint of which file to check, never trusted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from .interrupts import error_chain
from .locations import ModelError, hub_files, is_local, short_reason

# Weight files torch.load unpickles: loading one can run code hidden in it, so they need allow_pickle.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# safetensors itself refuses a header longer than this (its MAX_HEADER_SIZE).
SAFETENSORS_HEADER_LIMIT = 100_000_000
GIT_LFS_POINTER = b"version https://git-lfs"


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file (a short reason), or None when it is one.

    Reads the 8-byte header length and the JSON header only, and checks that the file is exactly as long as
    the header's largest data offset says: a truncated download, an empty file, a git-lfs pointer or any
    other file fails here before torch reads a byte of it.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            if file.read(len(GIT_LFS_POINTER)) == GIT_LFS_POINTER:
                return "a git-lfs pointer, not the weights; run git lfs pull"
            if size < 8:
                return "empty file" if size == 0 else f"only {size} bytes"
            file.seek(0)
            length = int.from_bytes(file.read(8), "little")
            if length > min(SAFETENSORS_HEADER_LIMIT, size - 8):
                return f"header length {length} does not fit in the file's {size} bytes"
            raw = file.read(length)
    except OSError as error:
        return f"cannot be read: {short_reason(error.strerror or type(error).__name__)}"
    try:
        header = json.loads(raw)
    except ValueError:  # UnicodeDecodeError is one too
        return "header is not JSON"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(offset) is int for offset in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            return "header has a malformed tensor entry"
        end = max(end, offsets[1])
    expected = 8 + length + end
    if size < expected:
        return f"only {size} of its {expected} bytes"
    if size > expected:
        return f"{size - expected} bytes more than its header describes"
    return None


def damaged_message(file: Path | str, reason: str) -> str:
    return f"{file} is damaged (truncated or not a safetensors file: {reason}); download it again"


def check_weight_files(folder: Path) -> None:
    """A ModelError naming the first damaged safetensors file in `folder` (its own files, not subfolders), or a
    shard its index lists that is missing or damaged. Headers only: cheap even for large models."""
    try:
        files = sorted(p for p in folder.iterdir() if p.name.endswith(".safetensors"))
    except OSError:
        return  # from_pretrained says what is wrong with the folder itself
    for file in files:
        problem = safetensors_problem(file)
        if problem is not None:
            raise ModelError(damaged_message(file, problem))
    for index in sorted(folder.glob("*.safetensors.index.json")):
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted({str(shard) for shard in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            reason = short_reason(error) or type(error).__name__
            raise ModelError(f"{index} is damaged (not a valid shard index: {reason}); download it again") from None
        for shard in shards:
            if not (folder / shard).is_file():
                raise ModelError(
                    f"{folder / short_reason(shard)} is missing (listed in {index.name}); download it again"
                )


def named_weight_files(error: BaseException) -> list[Path]:
    """The safetensors files on disk that `error` (or one it came from) names: to check them, never to trust
    what the message says about them."""
    found: list[Path] = []
    for link in error_chain(error):
        for quoted, bare in re.findall(r"'([^'\n]+?\.safetensors)'|([^\s'\"`]+?\.safetensors)(?![\w-])", str(link)):
            path = Path(quoted or bare)
            if path.is_file() and path not in found:
                found.append(path)
    return found


def check_named_files(error: BaseException) -> None:
    for file in named_weight_files(error):
        problem = safetensors_problem(file)
        if problem is not None:
            raise ModelError(damaged_message(file, problem)) from None


def pickle_only_error(model: str, components: Sequence[str]) -> ModelError:
    """The refusal of weights that are pickle files only: loading them can run code hidden in them."""
    return ModelError(
        f"{model} has no safetensors weights for {', '.join(components)} (only pickle files, which can run code "
        "when loaded); pass allow_pickle only if you trust its files",
        field="allow_pickle",
    )


def pickle_only_components(files: Sequence[str]) -> list[str]:
    """The folders (components) among `files` (paths relative to a checkpoint) with pickle weights but no
    safetensors ones; "." for weights at the top level."""
    pickles: set[str] = set()
    safe: set[str] = set()
    for file in files:
        path = Path(file)
        folder = path.parent.as_posix()
        name = path.name.removesuffix(".index.json")
        if name.endswith(".safetensors"):
            safe.add(folder)
        elif name.endswith(PICKLE_SUFFIXES):
            pickles.add(folder)
    return sorted(pickles - safe)


def local_files(directory: Path) -> list[str]:
    return [p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()]


def top_files(folder: Path) -> list[str]:
    """The names of the files directly in `folder`; [] when it cannot be listed."""
    try:
        return [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []


def index_components(folder: Path) -> list[str] | None:
    """The components a pipeline folder's model_index.json lists; None without a readable one."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # from_pretrained reports a missing or broken index itself
    if not isinstance(index, dict):
        return None
    return [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v and v[0]]


def component_folders(folder: Path, skip: set[str]) -> list[Path]:
    """The component folders from_pretrained will read weights from."""
    names = index_components(folder) or []
    return [folder / name for name in names if name not in skip and (folder / name).is_dir()]


def pickle_evidence(location: str, local: bool, error: Exception, skip: set[str]) -> list[str]:
    """The components a failed load is about whose weights the files show are pickle only: the folder on disk,
    the hub's file listing (quoted in diffusers' error, else asked of the hub) or the folder an error names.
    [] when the files do not show it, whatever the error's wording."""
    if local:
        return pickle_only_in_folder(Path(location).expanduser(), skip)
    candidates = [c for c in _pickle_components(location, error) if c not in skip]
    listing = re.findall(r"'([^']+)'", "\n".join(str(link) for link in error_chain(error)))
    if not pickle_only_components(listing):
        listing = hub_files(location) or []
    for link in error_chain(error):  # "Error no file named X.safetensors found in directory DIR."
        for directory in re.findall(r"found in directory (\S+?)\.?$", str(link).strip(), flags=re.M):
            folder = Path(directory)
            listing += [f"{folder.name}/{name}" for name in top_files(folder)] if folder.is_dir() else []
    shown = set(pickle_only_components(listing))
    return [c for c in candidates if c in shown]


def pickle_only_in_folder(folder: Path, skip: set[str]) -> list[str]:
    """The components a local pipeline folder's model_index.json lists whose weights are pickle files only."""
    folders = component_folders(folder, skip)
    return pickle_only_components([f"{c.name}/{file}" for c in folders for file in local_files(c)])


def _pickle_components(location: str, error: Exception) -> list[str]:
    """Which components a "no safetensors" error is about: from the directory, else from the message.

    Names only: the pickle hint needs the files to show it too (_pickle_evidence)."""
    message = str(error)
    if is_local(location):
        found = pickle_only_components(local_files(Path(location).expanduser()))
        if found:
            return found
    # diffusers' hub check lists the repository's files: "...safetensors` weights in ['a/x.bin', ...]"
    found = pickle_only_components(re.findall(r"'([^']+)'", message))
    if found:
        return found
    # transformers and diffusers models: "Error no file named X.safetensors found in directory DIR."
    directory = re.search(r"found in directory (\S+?)\.?$", message.strip().splitlines()[0])
    return [Path(directory.group(1)).name] if directory else ["its weights"]
