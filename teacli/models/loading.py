"""Loading a preset's pipeline: from_pretrained with safetensors only, no remote code, files checked first.

The parts: resolve (what the user typed after --model to a preset), devices (pick_device, pick_dtype),
locations (hub, cache or folder; ModelError), weights (damaged and pickle-only files), interrupts (Ctrl-C).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine.registry import has_extractor, unsupported_message
from ..errors import TeacliError
from .catalog import Component, Preset, PresetError
from .devices import DTYPES, pick_device, pick_dtype
from .interrupts import InterruptWatch, noting_interrupts, raise_if_interrupted
from .locations import (
    NO_REMOTE_CODE,
    ModelError,
    cached_snapshot,
    hub_failure,
    hub_files,
    is_local,
    on_disk,
    short_reason,
)
from .memory import quantization_config
from .resolve import resolve_preset
from .weights import (
    check_named_files,
    check_weight_files,
    component_folders,
    pickle_evidence,
    pickle_only_components,
    pickle_only_error,
    pickle_only_in_folder,
    top_files,
)

# Imported from here by the rest of teacli and documented (docs/scale.md: teacli.models.loading.resolve_preset).
__all__ = [
    "DTYPES",
    "ModelError",
    "check_extractor",
    "check_loaded_transformers",
    "load_pipeline",
    "pick_device",
    "pick_dtype",
    "resolve_preset",
]


def check_extractor(preset: Preset) -> None:
    if not has_extractor(preset.transformer):
        raise PresetError(
            f"preset {preset.source or preset.name}: field 'transformer': {unsupported_message(preset.transformer)}"
        )


def check_loaded_transformers(preset: Preset, pipe) -> None:
    """The classes actually loaded must have extractors too: a preset may name the wrong one."""
    from ..engine.apply import denoisers

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
    location, local = on_disk(spec.model, offline, f"{spec.model} (the {name} of {preset.model})")
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
        if not allow_pickle and "." in pickle_only_components(top_files(folder)):
            raise pickle_only_error(spec.model, [name])
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
        unreachable = None if local else hub_failure(error, spec.model)
        if unreachable is not None:
            raise unreachable from None
        if not allow_pickle and not local:
            prefix = f"{spec.subfolder.strip('/')}/" if spec.subfolder else ""
            listing = [f.removeprefix(prefix) for f in hub_files(spec.model) or [] if f.startswith(prefix)]
            if "." in pickle_only_components(listing):
                raise pickle_only_error(spec.model, [name]) from None
        raise


def load_pipeline(
    preset: Preset,
    device: torch.device,
    dtype: torch.dtype,
    *,
    allow_pickle: bool = False,
    offline: bool = False,
    quantize: str | None = None,
    on_device: bool = True,
):
    """Load with from_pretrained, the same path for hub models, local copies and embedded models.

    `quantize` (teacli.models.memory) quantizes the denoisers while they load; `on_device=False` leaves the
    pipeline on the CPU, for offloading to place.

    Weights load from safetensors files only unless `allow_pickle`; remote code is never enabled.
    `offline` (and any local directory) reads files on disk only: no request reaches the hub.
    A damaged weights file (truncated, empty, not safetensors) is a ModelError naming it, found from its
    header before anything loads; a Ctrl-C while loading stays a KeyboardInterrupt.
    """
    pipeline_class = _pipeline_class(preset)
    location = _weights_location(preset)
    from_cache = offline and not is_local(location)
    location, local = on_disk(location, offline, preset.model)
    options = dict(
        dtype=dtype,
        use_safetensors=None if allow_pickle else True,  # None: diffusers' default, pickle when no safetensors
        local_files_only=local,
    )
    if quantize is not None:
        options["quantization_config"] = quantization_config(quantize, _denoiser_names(pipeline_class), dtype)
    skip = set(preset.components)  # loaded from their own repositories, not from this folder
    if local:  # say so before loading anything, and before diffusers logs its own attempt
        _check_local_folder(preset, Path(location).expanduser(), skip, allow_pickle)
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
    except TeacliError:  # already says what to do
        raise
    except Exception as error:
        raise_if_interrupted(error, watch)
        explained = _explain_load_failure(error, preset, location, local, from_cache, skip, allow_pickle)
        if explained is None:
            raise
        raise explained from None
    check_loaded_transformers(preset, pipe)
    if on_device:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _denoiser_names(pipeline_class: type) -> list[str]:
    """The pipeline's denoiser components (transformer, and transformer_2 on two-expert pipelines)."""
    import inspect

    from ..engine.apply import DENOISER_COMPONENTS

    parameters = inspect.signature(pipeline_class.__init__).parameters
    return [name for name in DENOISER_COMPONENTS if name in parameters]


def _pipeline_class(preset: Preset) -> type:
    import diffusers

    pipeline_class = getattr(diffusers, preset.pipeline, None)
    if pipeline_class is None:
        raise PresetError(
            f"preset {preset.source or preset.name}: field 'pipeline': {preset.pipeline} is not in the installed "
            f"diffusers {diffusers.__version__}"
        )
    return pipeline_class


def _weights_location(preset: Preset) -> str:
    """Where the preset's weights are: its hub id or path, or the folder an embedded model is built in."""
    if preset.embedded is None:
        return preset.model
    from .embedded import MissingShippedModel, embedded_model_path

    try:
        return str(embedded_model_path(preset.embedded))
    except MissingShippedModel as error:
        raise ModelError(str(error)) from None


def _check_local_folder(preset: Preset, folder: Path, skip: set[str], allow_pickle: bool) -> None:
    """A pipeline folder on disk, checked before anything loads: damaged weights, pickle-only components."""
    for component in component_folders(folder, skip):
        check_weight_files(component)
    if not allow_pickle:
        pickled = pickle_only_in_folder(folder, skip)
        if pickled:
            raise pickle_only_error(preset.model, pickled)


def _explain_load_failure(
    error: Exception, preset: Preset, location: str, local: bool, from_cache: bool, skip: set[str], allow_pickle: bool
) -> ModelError | None:
    """The ModelError that says what to do about a failed from_pretrained, or None to let the error through.

    The files decide: a damaged file it names or the cache holds, then a hub model that could not be had (gated,
    not on the hub, unreachable and not cached), then weights that are pickle only; only then the library's own
    reason, for the errors that are about the files (OSError, ValueError, safetensors')."""
    try:
        check_named_files(error)
        snapshot = None if local else cached_snapshot(location)
        for folder in component_folders(snapshot, skip) if snapshot is not None else []:
            check_weight_files(folder)
    except ModelError as damaged:
        return damaged
    unreachable = None if local else hub_failure(error, location)
    if unreachable is not None:  # before the pickle check: it would ask the same unreachable hub for a listing
        return unreachable
    if not allow_pickle:
        pickled = pickle_evidence(location, local, error, skip)
        if pickled:
            return pickle_only_error(preset.model, pickled)
    if not isinstance(error, (OSError, ValueError)) and type(error).__name__ != "SafetensorError":
        return None
    first_line = short_reason(error) or type(error).__name__
    if "custom code" in first_line or "trust_remote_code" in first_line:
        return ModelError(f"could not load {preset.model}: {first_line} ({NO_REMOTE_CODE})")
    if from_cache:
        return ModelError(
            f"could not load {preset.model} offline ({first_line}): some of its files are not in the local "
            "Hugging Face cache; run once without --offline to download them"
        )
    return ModelError(f"could not load {preset.model} with {preset.pipeline}: {first_line}")
