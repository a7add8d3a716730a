"""From what the user typed after --model to a loaded diffusers pipeline."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

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
from .registry import has_extractor, unsupported_message

logger = logging.getLogger("teacli")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelError(ValueError):
    """The model could not be resolved or loaded; the message says what to do."""


# Weight files torch.load unpickles: loading one can run code hidden in it, so they need --allow-pickle.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
NO_REMOTE_CODE = "teacli never runs code from a model repository"
NOT_CACHED = "is not in the local Hugging Face cache; run once without --offline to download it"


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
):
    """TeaCacheConfig from a preset; a dict per denoiser when it has expert overrides (Wan 2.2).

    `thresh` and `coefficients` given here apply to every denoiser. Given coefficients drop the preset's
    calibrated rel_l1_range too: that range belongs to the fit it came with, not to these.
    """
    from .hook import TeaCacheConfig

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
    from .hook import denoisers

    for name, module in denoisers(pipe).items():
        class_name = type(module).__name__
        if not has_extractor(class_name):
            raise ModelError(f"{preset.model}: its {name} is a {class_name}: {unsupported_message(class_name)}")


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
    preset: Preset, name: str, spec: Component, dtype: torch.dtype, *, allow_pickle: bool, offline: bool
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
    if isinstance(component_class, type) and issubclass(component_class, torch.nn.Module):
        kwargs.setdefault("dtype", dtype)
        kwargs["use_safetensors"] = None if allow_pickle else True  # None: diffusers/transformers' default
    try:
        return component_class.from_pretrained(location, **kwargs)
    except OSError as error:
        if not allow_pickle and "safetensors" in str(error):
            raise ModelError(_pickle_hint(spec.model, [name])) from None
        raise


def load_pipeline(
    preset: Preset, device: torch.device, dtype: torch.dtype, *, allow_pickle: bool = False, offline: bool = False
):
    """Load with from_pretrained, the same path for hub models, local copies and embedded models.

    Weights load from safetensors files only unless `allow_pickle`; remote code is never enabled.
    `offline` (and any local directory) reads files on disk only: no request reaches the hub.
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
    if local and not allow_pickle:  # say so before loading anything, and before diffusers logs its own attempt
        pickled = _pickle_only_in_folder(Path(location).expanduser(), skip=set(preset.components))
        if pickled:
            raise ModelError(_pickle_hint(preset.model, pickled))
    try:
        components = {
            name: _load_component(preset, name, spec, dtype, allow_pickle=allow_pickle, offline=offline)
            for name, spec in preset.components.items()
        }
        pipe = pipeline_class.from_pretrained(location, **options, **components)
    except (PresetError, ModelError):
        raise
    except (OSError, ValueError) as error:
        if not allow_pickle and "safetensors" in str(error):
            raise ModelError(_pickle_hint(preset.model, _pickle_components(location, error))) from None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
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


def _pickle_only_in_folder(folder: Path, skip: set[str]) -> list[str]:
    """The components a local pipeline folder's model_index.json lists whose weights are pickle files only."""
    import json

    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # from_pretrained reports a missing or broken index itself
    names = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v and v[0]]
    loaded = [name for name in names if name not in skip and (folder / name).is_dir()]
    return pickle_only_components([f"{name}/{file}" for name in loaded for file in _local_files(folder / name)])


def _pickle_components(location: str, error: Exception) -> list[str]:
    """Which components a "no safetensors" error is about: from the directory, else from the message."""
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
