"""What the user typed after --model to a preset: a preset name, a preset file, or a pipeline to borrow for."""

from __future__ import annotations

import difflib
import logging
import warnings
from dataclasses import replace
from pathlib import Path

from ..engine.registry import has_extractor, unsupported_message
from .catalog import DEFAULT_PRESET, Preset, all_presets, find_preset, load_preset_file
from .locations import NO_REMOTE_CODE, ModelError, hub_failure, on_disk

logger = logging.getLogger("teacli")


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
    if not _could_be_hub_id_or_path(model):
        raise ModelError(unknown_name_message(model))
    return _borrowed_preset(model, offline=offline)


def _could_be_hub_id_or_path(model: str) -> bool:
    """A hub id has an owner (owner/name); anything else must be a file or folder. Deciding this before asking the
    hub keeps a typo from spending its retries (half a minute or more) on a lookup that cannot succeed."""
    return "/" in model or "\\" in model or Path(model).expanduser().exists()


def closest_presets(name: str, count: int = 3) -> list[str]:
    """The preset names nearest to `name` (difflib's ratio), else those that start with it: for a did-you-mean."""
    names = list(all_presets())
    wanted = name.lower()
    close = difflib.get_close_matches(wanted, names, n=count, cutoff=0.6)
    return close or [candidate for candidate in names if candidate.startswith(wanted)][:count]


def unknown_name_message(model: str) -> str:
    """One line for a name that is no preset, file or folder, and has no owner to be a hub id."""
    close = closest_presets(model)
    if close:
        choices = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
        return f"unknown model '{model}': did you mean {choices}? (`teacli list-models` shows all)"
    return (
        f"unknown model '{model}': not a preset, a preset file or a folder, and a hub id has an owner "
        "(owner/name); `teacli list-models` shows the presets"
    )


def _borrowed_preset(model: str, *, offline: bool = False) -> Preset:
    from diffusers import DiffusionPipeline

    what = (
        f"model '{model}' is not a preset (see `teacli list-models`), a preset file or a local pipeline directory, and"
    )
    location, local = on_disk(model, offline, what)
    if not local:  # the hub may take a while to answer (or to give up): say what is happening
        logger.info("%s is not a preset: looking it up on the Hugging Face Hub ...", model)
    try:
        with warnings.catch_warnings():  # hub client deprecation notices are not the user's concern
            warnings.simplefilter("ignore")
            index = DiffusionPipeline.load_config(location, local_files_only=local)
    except Exception as error:  # noqa: BLE001 - hub/IO errors come in many types; all mean "not found"
        explained = None if local else hub_failure(error, model)
        if explained is not None:
            raise explained from None
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
            "and defaults from; write a preset file for it (docs/models.md, 'Adding a model') and pass it to --model"
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
        vocabulary=None,  # the words a donor was trained on say nothing about this model
    )
