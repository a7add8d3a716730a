"""From what the user typed after --model to a loaded diffusers pipeline."""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from ..engine.plan import Plan
from ..engine.registry import has_extractor, unsupported_message
from ..errors import TeacliError
from ..limits import clip
from .catalog import (
    DEFAULT_PRESET,
    Component,
    ExpertOverride,
    Preset,
    PresetError,
    all_presets,
    find_preset,
    load_preset_file,
)

logger = logging.getLogger("teacli")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelError(TeacliError, ValueError):
    """The model could not be resolved or loaded; the message says what to do."""


# Weight files torch.load unpickles: loading one can run code hidden in it, so they need --allow-pickle.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
NO_REMOTE_CODE = "teacli never runs code from a model repository"
NOT_CACHED = "is not in the local Hugging Face cache; run once without --offline to download it"


# safetensors itself refuses a header longer than this (its MAX_HEADER_SIZE).
SAFETENSORS_HEADER_LIMIT = 100_000_000
GIT_LFS_POINTER = b"version https://git-lfs"


def short_reason(text: object) -> str:
    """The first non-empty line of a library's message, cut to one short line (limits.clip)."""
    return clip(next((line for line in str(text).splitlines() if line.strip()), ""))


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


def _damaged(file: Path | str, reason: str) -> str:
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
            raise ModelError(_damaged(file, problem))
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


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and the exceptions it was raised from or while handling."""
    seen: list[BaseException] = []
    while error is not None and not any(error is e for e in seen):
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def raise_if_interrupted(error: BaseException, watch: InterruptWatch | None = None) -> None:
    """Raise KeyboardInterrupt when `error` came out of a Ctrl-C: one arrived while loading, or `error` was
    raised while a KeyboardInterrupt unwound. Never a ModelError for the user's own Ctrl-C."""
    if (watch is not None and watch.seen) or any(isinstance(e, KeyboardInterrupt) for e in _chain(error)):
        raise KeyboardInterrupt from error


def named_weight_files(error: BaseException) -> list[Path]:
    """The safetensors files on disk that `error` (or one it came from) names: to check them, never to trust
    what the message says about them."""
    found: list[Path] = []
    for link in _chain(error):
        for quoted, bare in re.findall(r"'([^'\n]+?\.safetensors)'|([^\s'\"`]+?\.safetensors)(?![\w-])", str(link)):
            path = Path(quoted or bare)
            if path.is_file() and path not in found:
                found.append(path)
    return found


def check_named_files(error: BaseException) -> None:
    for file in named_weight_files(error):
        problem = safetensors_problem(file)
        if problem is not None:
            raise ModelError(_damaged(file, problem)) from None


def hub_files(repo_id: str) -> list[str] | None:
    """The file list of a hub repository, or None when it cannot be had (offline, unreachable, not a repo)."""
    try:
        from huggingface_hub import list_repo_files

        return list_repo_files(repo_id)
    except Exception:  # noqa: BLE001 - any failure only means the listing is unknown
        return None


def _pickle_hint(model: str, components: Sequence[str]) -> str:
    return (
        f"{model} has no safetensors weights for {', '.join(components)} (only pickle files, which can run code "
        "when loaded); pass --allow-pickle only if you trust its files"
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


def _local_files(directory: Path) -> list[str]:
    return [p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()]


def _is_local(location: str) -> bool:
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


def _on_disk(location: str, offline: bool, what: str) -> tuple[str, bool]:
    """(where to load `location` from, whether that is a folder on disk); offline, a hub id becomes its cached
    folder, or a ModelError saying it is not cached (`what` names it in that message)."""
    if _is_local(location):
        return location, True
    if not offline:
        return location, False
    snapshot = cached_snapshot(location)
    if snapshot is None:
        raise ModelError(f"{what} {NOT_CACHED}")
    return str(snapshot), True


def resolve_preset(model: str | None, *, offline: bool = False) -> Preset:
    """A preset name (user presets first), a preset file, a hub id or local path of a preset, or any pipeline
    whose transformer has an extractor (its coefficients are then borrowed from a preset of that class).

    `offline`: a hub id is read from the local Hugging Face cache only, never looked up online."""
    if model is None:
        return all_presets()[DEFAULT_PRESET]
    if model.lower().endswith((".yaml", ".yml")):
        path = Path(model).expanduser()
        if not path.exists():
            where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
            raise ModelError(f"preset file {model} does not exist{where}")
        if not path.is_file():
            raise ModelError(f"preset file {model} is not a file")
        return load_preset_file(path)
    preset = find_preset(model)
    if preset is not None:
        return preset
    return _borrowed_preset(model, offline=offline)


def _borrowed_preset(model: str, *, offline: bool = False) -> Preset:
    from diffusers import DiffusionPipeline

    what = (
        f"model '{model}' is not a preset (see `teacli list-models`), a preset file or a local pipeline directory, and"
    )
    location, local = _on_disk(model, offline, what)
    try:
        with warnings.catch_warnings():  # hub client deprecation notices are not the user's concern
            warnings.simplefilter("ignore")
            index = DiffusionPipeline.load_config(location, local_files_only=local)
    except Exception as error:  # noqa: BLE001 - hub/IO errors come in many types; all mean "not found"
        raise ModelError(
            f"unknown model '{model}': not a preset, a preset file, a local pipeline directory or a reachable hub id "
            f"({type(error).__name__}); see `teacli list-models` for the presets"
        ) from None
    if not isinstance(index, dict):
        raise ModelError(f"model '{model}': its model_index.json is not a mapping of components; download it again")
    pipeline = index.get("_class_name")
    # [module, class]: a pipeline class shipped as code in the repository
    if pipeline is not None and not isinstance(pipeline, str):
        raise ModelError(f"model '{model}' names its own pipeline code ({pipeline}); {NO_REMOTE_CODE}")
    transformer = index.get("transformer")
    class_name = transformer[1] if isinstance(transformer, (list, tuple)) and len(transformer) == 2 else None
    if class_name is None:
        raise ModelError(f"model '{model}' has no transformer component; TeaCache needs a diffusion transformer")
    if not has_extractor(class_name):
        raise ModelError(f"model '{model}' uses {class_name}: {unsupported_message(class_name)}")
    # A user preset replacing a built-in (a calibrated flux-dev) lends its coefficients in the built-in's place.
    donors = [p for p in all_presets().values() if p.transformer == class_name and not p.is_test_model]
    if not donors:
        raise ModelError(
            f"model '{model}' uses {class_name}, which has an extractor but no preset to take coefficients "
            "and defaults from; write a preset file for it (README, 'Adding a model') and pass it to --model"
        )
    donor = donors[0]
    logger.info("No preset for %s: borrowing %s's coefficients and defaults", model, donor.name)
    return replace(
        donor,
        name=model,
        model=model,
        pipeline=pipeline or donor.pipeline,
        coefficients_source=f"borrowed from {donor.name} ({donor.coefficients_source})",
        source="",
    )


def teacache_configs(
    preset: Preset,
    thresh: float | None = None,
    coefficients: Sequence[float] | None = None,
    coefficients_source: str = "user",
    plan: Plan | None = None,
):
    """TeaCacheConfig from a preset; a dict per denoiser when it has expert overrides (Wan 2.2).

    `thresh`, `coefficients` and a `plan` (teacli.engine.plan: it then decides instead of the threshold) given here
    apply to every denoiser. Given coefficients drop the preset's
    calibrated rel_l1_range too: that range belongs to the fit it came with, not to these.
    """
    from ..engine.hook import TeaCacheConfig

    def config(override: ExpertOverride) -> TeaCacheConfig:
        pick = lambda own, shared: shared if own is None else own  # noqa: E731
        own_fit = coefficients is None
        return TeaCacheConfig(
            thresh=thresh if thresh is not None else pick(override.thresh, preset.thresh),
            coefficients=pick(override.coefficients, preset.coefficients) if own_fit else tuple(coefficients),
            ret_steps=pick(override.ret_steps, preset.ret_steps),
            cutoff_steps=preset.cutoff_steps,
            rel_l1_range=pick(override.rel_l1_range, preset.rel_l1_range) if own_fit else None,
            coefficients_source=pick(override.coefficients_source, preset.coefficients_source)
            if own_fit
            else coefficients_source,
            modulated_input=pick(override.modulated_input, preset.modulated_input),
            plan=plan,
        )

    base = config(ExpertOverride())
    if not preset.experts:
        return base
    return {"transformer": base, **{name: config(override) for name, override in preset.experts.items()}}


def check_extractor(preset: Preset) -> None:
    if not has_extractor(preset.transformer):
        raise PresetError(
            f"preset {preset.source or preset.name}: field 'transformer': {unsupported_message(preset.transformer)}"
        )


def check_loaded_transformers(preset: Preset, pipe) -> None:
    """The classes actually loaded must have extractors too: a preset may name the wrong one."""
    from ..engine.hook import denoisers

    loaded = denoisers(pipe)
    for name, module in loaded.items():
        class_name = type(module).__name__
        if not has_extractor(class_name):
            raise ModelError(f"{preset.model}: its {name} is a {class_name}: {unsupported_message(class_name)}")
    for name in preset.experts:  # an override for a denoiser this pipeline lacks (a one-expert Wan 2.1, ...)
        if name not in loaded:
            raise PresetError(
                f"preset {preset.source or preset.name}: field 'experts.{name}': {preset.pipeline} loaded from "
                f"{preset.model} has no {name} (its denoisers: {', '.join(loaded)}); remove the entry"
            )


def pick_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelError("--device mps was asked for but MPS is not available; use --device cpu or auto")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def _load_component(
    preset: Preset,
    name: str,
    spec: Component,
    dtype: torch.dtype,
    *,
    allow_pickle: bool,
    offline: bool,
    watch: InterruptWatch | None = None,
):
    """One component the checkpoint does not ship, from its own repository (as the model card shows)."""
    import diffusers
    import transformers

    component_class = getattr(transformers, spec.class_name, None) or getattr(diffusers, spec.class_name, None)
    if component_class is None:
        raise PresetError(
            f"preset {preset.source or preset.name}: field 'components.{name}.class': {spec.class_name} is in "
            "neither transformers nor diffusers"
        )
    location, local = _on_disk(spec.model, offline, f"{spec.model} (the {name} of {preset.model})")
    # The preset's kwargs cannot turn code or pickle on: catalog refuses those fields.
    kwargs = dict(spec.kwargs)
    if spec.subfolder:
        kwargs["subfolder"] = spec.subfolder
    kwargs["local_files_only"] = local
    has_weights = isinstance(component_class, type) and issubclass(component_class, torch.nn.Module)
    if has_weights:
        kwargs.setdefault("dtype", dtype)
        kwargs["use_safetensors"] = None if allow_pickle else True  # None: diffusers/transformers' default
    if local and has_weights:  # before loading anything, as for the pipeline's own folders
        folder = Path(location).expanduser() / (spec.subfolder or "")
        check_weight_files(folder)
        if not allow_pickle and "." in pickle_only_components(_top_files(folder)):
            raise ModelError(_pickle_hint(spec.model, [name]))
    try:
        return component_class.from_pretrained(location, **kwargs)
    except Exception as error:
        raise_if_interrupted(error, watch)
        if not has_weights:
            raise
        try:
            check_named_files(error)
            snapshot = None if local else cached_snapshot(spec.model)
            if snapshot is not None:
                check_weight_files(snapshot / (spec.subfolder or ""))
        except ModelError as damaged:
            raise damaged from None
        if not allow_pickle and not local:
            prefix = f"{spec.subfolder.strip('/')}/" if spec.subfolder else ""
            listing = [f.removeprefix(prefix) for f in hub_files(spec.model) or [] if f.startswith(prefix)]
            if "." in pickle_only_components(listing):
                raise ModelError(_pickle_hint(spec.model, [name])) from None
        raise


def load_pipeline(
    preset: Preset, device: torch.device, dtype: torch.dtype, *, allow_pickle: bool = False, offline: bool = False
):
    """Load with from_pretrained, the same path for hub models, local copies and embedded models.

    Weights load from safetensors files only unless `allow_pickle`; remote code is never enabled.
    `offline` (and any local directory) reads files on disk only: no request reaches the hub.
    A damaged weights file (truncated, empty, not safetensors) is a ModelError naming it, found from its
    header before anything loads; a Ctrl-C while loading stays a KeyboardInterrupt.
    """
    import diffusers

    pipeline_class = getattr(diffusers, preset.pipeline, None)
    if pipeline_class is None:
        raise PresetError(
            f"preset {preset.source or preset.name}: field 'pipeline': {preset.pipeline} is not in the installed "
            f"diffusers {diffusers.__version__}"
        )
    if preset.embedded is not None:
        from .embedded import MissingShippedModel, embedded_model_path

        try:
            location = str(embedded_model_path(preset.embedded))
        except MissingShippedModel as error:
            raise ModelError(str(error)) from None
    else:
        location = preset.model
    from_cache = offline and not _is_local(location)
    location, local = _on_disk(location, offline, preset.model)
    options = dict(
        dtype=dtype,
        use_safetensors=None if allow_pickle else True,  # None: diffusers' default, pickle when no safetensors
        local_files_only=local,
    )
    skip = set(preset.components)  # loaded from their own repositories, not from this folder
    if local:  # say so before loading anything, and before diffusers logs its own attempt
        for folder in _component_folders(Path(location).expanduser(), skip):
            check_weight_files(folder)
        if not allow_pickle:
            pickled = _pickle_only_in_folder(Path(location).expanduser(), skip)
            if pickled:
                raise ModelError(_pickle_hint(preset.model, pickled))
    watch = None
    try:
        with noting_interrupts() as watch:
            components = {
                name: _load_component(
                    preset, name, spec, dtype, allow_pickle=allow_pickle, offline=offline, watch=watch
                )
                for name, spec in preset.components.items()
            }
            pipe = pipeline_class.from_pretrained(location, **options, **components)
    except (PresetError, ModelError):
        raise
    except Exception as error:
        raise_if_interrupted(error, watch)
        try:
            check_named_files(error)
            snapshot = None if local else cached_snapshot(location)
            for folder in _component_folders(snapshot, skip) if snapshot is not None else []:
                check_weight_files(folder)
        except ModelError as damaged:
            raise damaged from None
        if not allow_pickle:
            pickled = _pickle_evidence(location, local, error, skip)
            if pickled:
                raise ModelError(_pickle_hint(preset.model, pickled)) from None
        if not isinstance(error, (OSError, ValueError)) and type(error).__name__ != "SafetensorError":
            raise
        first_line = short_reason(error) or type(error).__name__
        if "custom code" in first_line or "trust_remote_code" in first_line:
            raise ModelError(f"could not load {preset.model}: {first_line} ({NO_REMOTE_CODE})") from None
        if from_cache:
            raise ModelError(
                f"could not load {preset.model} offline ({first_line}): some of its files are not in the local "
                "Hugging Face cache; run once without --offline to download them"
            ) from None
        raise ModelError(f"could not load {preset.model} with {preset.pipeline}: {first_line}") from None
    check_loaded_transformers(preset, pipe)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _top_files(folder: Path) -> list[str]:
    """The names of the files directly in `folder`; [] when it cannot be listed."""
    try:
        return [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []


def _index_components(folder: Path) -> list[str] | None:
    """The components a pipeline folder's model_index.json lists; None without a readable one."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # from_pretrained reports a missing or broken index itself
    if not isinstance(index, dict):
        return None
    return [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v and v[0]]


def _component_folders(folder: Path, skip: set[str]) -> list[Path]:
    """The component folders from_pretrained will read weights from."""
    names = _index_components(folder) or []
    return [folder / name for name in names if name not in skip and (folder / name).is_dir()]


def _pickle_evidence(location: str, local: bool, error: Exception, skip: set[str]) -> list[str]:
    """The components a failed load is about whose weights the files show are pickle only: the folder on disk,
    the hub's file listing (quoted in diffusers' error, else asked of the hub) or the folder an error names.
    [] when the files do not show it, whatever the error's wording."""
    if local:
        return _pickle_only_in_folder(Path(location).expanduser(), skip)
    candidates = [c for c in _pickle_components(location, error) if c not in skip]
    listing = re.findall(r"'([^']+)'", "\n".join(str(link) for link in _chain(error)))
    if not pickle_only_components(listing):
        listing = hub_files(location) or []
    for link in _chain(error):  # "Error no file named X.safetensors found in directory DIR."
        for directory in re.findall(r"found in directory (\S+?)\.?$", str(link).strip(), flags=re.M):
            folder = Path(directory)
            listing += [f"{folder.name}/{name}" for name in _top_files(folder)] if folder.is_dir() else []
    shown = set(pickle_only_components(listing))
    return [c for c in candidates if c in shown]


def _pickle_only_in_folder(folder: Path, skip: set[str]) -> list[str]:
    """The components a local pipeline folder's model_index.json lists whose weights are pickle files only."""
    folders = _component_folders(folder, skip)
    return pickle_only_components([f"{c.name}/{file}" for c in folders for file in _local_files(c)])


def _pickle_components(location: str, error: Exception) -> list[str]:
    """Which components a "no safetensors" error is about: from the directory, else from the message.

    Names only: the pickle hint needs the files to show it too (_pickle_evidence)."""
    message = str(error)
    if _is_local(location):
        found = pickle_only_components(_local_files(Path(location).expanduser()))
        if found:
            return found
    # diffusers' hub check lists the repository's files: "...safetensors` weights in ['a/x.bin', ...]"
    found = pickle_only_components(re.findall(r"'([^']+)'", message))
    if found:
        return found
    # transformers and diffusers models: "Error no file named X.safetensors found in directory DIR."
    directory = re.search(r"found in directory (\S+?)\.?$", message.strip().splitlines()[0])
    return [Path(directory.group(1)).name] if directory else ["its weights"]
