"""LoRA weights on a loaded pipeline, through diffusers' own LoRA loaders (PEFT backend).

The LoRA layers live inside the transformer's linear layers, so TeaCache's hook sees them like any
other weight: the blocks' residual it caches already includes the LoRA's contribution.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from .interrupts import noting_interrupts, raise_if_interrupted
from .locations import NOT_CACHED, ModelError, cached_snapshot, hub_files, short_reason
from .weights import PICKLE_SUFFIXES, named_weight_files, safetensors_problem

LORA_EXTRA = "pip install 'teacli[lora]'"
# owner/name, as the hub spells repository ids; anything else is taken for a path on disk.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
ADAPTER_PREFIX = "teacli_lora_"  # adapter names are module-dict keys: no dots
# diffusers' guess of a LoRA folder's weights file skips names with these, and prefers this name.
NOT_LORA_FILES = ("scheduler", "optimizer", "checkpoint")
LORA_FILE = "pytorch_lora_weights.safetensors"


def load_lora(pipe: Any, path: str, scale: float = 1.0, *, allow_pickle: bool = False, offline: bool = False) -> str:
    """Load the LoRA at `path` (a file, a directory or a hub id) into `pipe` at `scale`; returns the adapter name.

    LoRAs loaded earlier stay active at their own scales. Weights load from safetensors only unless
    `allow_pickle`; `offline` reads a hub id from the local Hugging Face cache only. Every failure is a
    one-line ModelError, and a failed load leaves no adapter behind.
    """
    if not hasattr(pipe, "load_lora_weights"):
        raise ModelError(
            f"{type(pipe).__name__} has no LoRA support in diffusers {_diffusers_version()}; drop lora", field="lora"
        )
    _require_peft()
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ModelError(f"lora_scale must be a finite number, got {scale!r}", field="lora_scale")
    source, weight_name, local = locate_lora(path, allow_pickle=allow_pickle, offline=offline)

    taken = {name for names in pipe.get_list_adapters().values() for name in names}
    # Earlier load_lora calls' scales, less adapters removed since (unload_lora_weights, delete_adapters).
    scales = {n: s for n, s in getattr(pipe, "_teacli_lora_scales", {}).items() if n in taken}
    name = next(f"{ADAPTER_PREFIX}{i}" for i in range(len(taken) + 1) if f"{ADAPTER_PREFIX}{i}" not in taken)
    options = dict(
        adapter_name=name,
        use_safetensors=None if allow_pickle else True,  # None: diffusers tries safetensors, then pickle
        local_files_only=local,
    )
    if weight_name is not None:
        options["weight_name"] = weight_name
    try:
        with noting_interrupts() as watch:
            pipe.load_lora_weights(source, **options)
    except KeyboardInterrupt:
        _drop_adapter(pipe, name)
        raise
    except Exception as error:  # noqa: BLE001 - diffusers and peft raise many types; each means a bad file
        _drop_adapter(pipe, name)
        raise_if_interrupted(error, watch)  # a Ctrl-C a library reported as something else
        _diagnose(path, source, local, error, allow_pickle)
        raise ModelError(_explain(pipe, path, error)) from None
    if not any(name in names for names in pipe.get_list_adapters().values()):
        raise ModelError(f"{path} is not a LoRA for {_target(pipe)}: none of its weights matched the pipeline's layers")
    scales = {**scales, name: float(scale)}
    pipe.set_adapters(list(scales), adapter_weights=list(scales.values()))
    pipe._teacli_lora_scales = scales
    return name


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def _require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ModelError(f"lora needs the peft package: {LORA_EXTRA}", field="lora") from None
    from diffusers.utils import USE_PEFT_BACKEND

    if not USE_PEFT_BACKEND:  # peft or transformers too old for diffusers' LoRA backend
        raise ModelError(
            f"lora needs newer peft and transformers for diffusers' LoRA support: {LORA_EXTRA} -U", field="lora"
        )


def locate_lora(path: str, *, allow_pickle: bool, offline: bool) -> tuple[str, str | None, bool]:
    """(what to pass to load_lora_weights, the weight file name or None, whether it is on disk).

    A file or folder on disk is checked before anything loads: its safetensors files' headers (a damaged file
    is named), and a folder must hold a weights file; pickle-only weights need `allow_pickle`.
    """
    local = Path(path).expanduser()
    if local.exists() and not (local.is_file() or local.is_dir()):
        raise ModelError(f"LoRA {path} is not a regular file (a device or a pipe); pass a .safetensors file")
    if local.is_file():
        if not allow_pickle and (local.name.endswith(PICKLE_SUFFIXES) or _looks_pickled(local)):
            raise _pickle_only_error(path)
        if local.name.endswith(".safetensors") or not allow_pickle:
            _check_lora_file(local)  # whatever its name, diffusers would torch.load a file that is not safetensors
        return str(local.parent), local.name, True
    if local.is_dir():
        files = sorted(p for p in local.iterdir() if p.is_file())
        safe = [p for p in files if p.name.endswith(".safetensors")]
        if not safe:
            if not any(p.name.endswith(PICKLE_SUFFIXES) for p in files):
                raise ModelError(
                    f"LoRA folder {path} holds no weights file (.safetensors); pass the LoRA's .safetensors file "
                    "or the folder it is in"
                )
            if not allow_pickle:
                raise _pickle_only_error(path)
        for file in _lora_candidates(safe):
            _check_lora_file(file)
        return str(local), None, True
    if not HUB_ID.fullmatch(path) or path.lower().endswith((".safetensors", *PICKLE_SUFFIXES)):
        where = "" if local.is_absolute() else f" (relative to {Path.cwd()})"
        raise ModelError(f"LoRA {path} does not exist{where}; pass a .safetensors file, its folder or a hub id")
    if not offline:
        return path, None, False
    # Offline, read the cached copy as a folder: the hub client's own calls may go online.
    snapshot = cached_snapshot(path)
    if snapshot is None:
        raise ModelError(f"LoRA {path} {NOT_CACHED}")
    return locate_lora(str(snapshot), allow_pickle=allow_pickle, offline=offline)


# How torch.save's files begin: a zip archive (torch >= 1.6) or a pickle stream (protocol 2 and up).
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _looks_pickled(file: Path) -> bool:
    try:
        with open(file, "rb") as source:
            return source.read(4).startswith(PICKLE_MAGIC)
    except OSError:
        return False


def _lora_candidates(files: list[Path]) -> list[Path]:
    """The safetensors files of a folder that diffusers may pick as the LoRA (it takes the first it lists)."""
    kept = [f for f in files if not any(word in f.name for word in NOT_LORA_FILES)]
    return [f for f in kept if f.name.endswith(LORA_FILE)] or kept


def _check_lora_file(file: Path) -> None:
    problem = safetensors_problem(file)
    if problem is not None:
        raise ModelError(_damaged_lora(file, problem))


def _damaged_lora(file: Path | str, reason: str) -> str:
    return f"LoRA {file} is damaged (truncated or not a safetensors file: {reason}); download it again"


def _diagnose(path: str, source: str, local: bool, error: Exception, allow_pickle: bool) -> None:
    """A ModelError for a failed load that the files explain: a damaged file (one the error names, or, for a hub
    id, one in its cached copy), or a hub repository whose listing holds pickle weights only, or none at all.

    Local files were checked before loading (locate_lora); this looks at what was downloaded, and never takes
    an error's wording for the files' state."""
    files = named_weight_files(error)
    snapshot = None if local else cached_snapshot(path)
    if snapshot is not None:
        files += _lora_candidates(sorted(snapshot.glob("*.safetensors")))
    for file in files:
        problem = safetensors_problem(file)
        if problem is not None:
            raise ModelError(_damaged_lora(file, problem)) from None
    listing = None if local else hub_files(source)
    top = [name for name in listing or [] if "/" not in name]
    if listing is not None and not any(name.endswith(".safetensors") for name in top):
        if not any(name.endswith(PICKLE_SUFFIXES) for name in top):
            raise ModelError(
                f"LoRA {path} has no weights file (.safetensors) at the top of its hub repository; download the "
                "LoRA's file and pass its path"
            ) from None
        if not allow_pickle:
            raise _pickle_only_error(path) from None


def _pickle_only_error(path: str) -> ModelError:
    return ModelError(
        f"LoRA {path} has no safetensors weights (only pickle files, which can run code when loaded); "
        "pass allow_pickle only if you trust it",
        field="allow_pickle",
    )


def _target(pipe: Any) -> str:
    transformer = getattr(pipe, "transformer", None)
    inner = f" ({type(transformer).__name__})" if transformer is not None else ""
    return f"{type(pipe).__name__}{inner}"


def _first_line(error: Exception) -> str:
    """The line that says what went wrong (torch's state-dict errors put it after a heading), cut short."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    mismatch = [line for line in lines if line.startswith("size mismatch")]
    return short_reason((mismatch or lines or [type(error).__name__])[0])


def _explain(pipe: Any, path: str, error: Exception) -> str:
    """One line for a failed load_lora_weights: what was wrong with the file and what to do.

    Pickle advice is never given here: only the files can say a LoRA is pickle only (locate_lora, _diagnose).
    """
    text = str(error)
    if type(error).__name__ == "SafetensorError":  # safetensors could not read the file diffusers picked
        return _damaged_lora(path, _first_line(error))
    if "Invalid LoRA checkpoint" in text:
        return f"{path} is not a LoRA: none of its weights has a LoRA name (lora_A/lora_B, lora_down/lora_up)"
    if isinstance(error, OSError):
        return f"could not read LoRA {path}: {_first_line(error)}"
    line = _first_line(error)
    hint = " (its layer shapes are another model's)" if line.startswith("size mismatch") else ""
    return f"{path} is not a LoRA for {_target(pipe)}: {line}{hint}"


def _drop_adapter(pipe: Any, name: str) -> None:
    """Remove what a failed load left behind, so the pipeline runs as before."""
    try:
        if any(name in names for names in pipe.get_list_adapters().values()):
            pipe.delete_adapters(name)
    except Exception:  # noqa: BLE001, S110 - best effort: the load error is what the user needs to see
        pass
