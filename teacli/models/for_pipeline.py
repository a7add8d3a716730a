"""The preset of a loaded pipeline or a bare transformer, for `teacli.apply_teacache`.

Found by the model it was loaded from (a hub id, a preset's local path, an embedded model's folder, a Hugging
Face cache snapshot of a hub id, or a folder named like a hub id's last part), else by its transformer class.
Every match must agree with the transformer class, so a folder that merely shares a name never lends the wrong
coefficients.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.apply import DENOISER_COMPONENTS, denoisers
from ..engine.config import TeaCacheError
from ..engine.registry import get_extractor, has_extractor
from .catalog import Preset, all_presets

# A Hugging Face cache folder: models--{org}--{name}/snapshots/{revision}
HUB_CACHE_FOLDER = re.compile(r"^models--(?P<org>[^/]+?)--(?P<name>[^/]+)$")


@dataclass(frozen=True)
class PipelinePreset:
    """The preset found for a pipeline and how: 'hub id black-forest-labs/FLUX.1-dev', 'transformer class ...'."""

    preset: Preset
    found_by: str
    transformer: str  # the class of the (first) denoiser

    def describe(self) -> str:
        """'preset flux-dev (by hub id black-forest-labs/FLUX.1-dev)': for logs and handle.stats."""
        return f"preset {self.preset.name} (by {self.found_by})"


def transformer_class(pipe_or_transformer: Any) -> str:
    """The class name of the first denoiser (a compiled or wrapped one unwrapped)."""
    from diffusers.utils.torch_utils import unwrap_module

    module = next(iter(denoisers(pipe_or_transformer).values()))
    return type(unwrap_module(module)).__name__


def preset_for_pipeline(pipe_or_transformer: Any) -> PipelinePreset:
    """The preset whose coefficients and defaults fit this pipeline or transformer; a TeaCacheError if none does."""
    class_name = transformer_class(pipe_or_transformer)
    pipeline = None if _is_module(pipe_or_transformer) else type(pipe_or_transformer).__name__
    presets = [p for p in all_presets().values() if p.transformer == class_name]
    for location in _loaded_from(pipe_or_transformer):
        found = _by_location(location, presets, pipeline)
        if found is not None:
            preset, how = found
            return PipelinePreset(preset, how, class_name)
    if not presets:
        if not has_extractor(class_name):
            get_extractor(class_name)  # raises the unsupported-class message, which says what to do
        raise TeaCacheError(
            f"no preset for {class_name} to take coefficients from; pass them as TeaCacheConfig's coefficients= "
            "(teacli calibrate fits them), or a planned schedule as its plan="
        )
    chosen = min(presets, key=lambda p: (p.is_test_model, p.pipeline != pipeline, *_preference(p)))
    how = f"transformer class {class_name}"
    if len(presets) > 1:
        how += f", the first of its {len(presets)} presets; pass coefficients to choose"
    return PipelinePreset(chosen, how, class_name)


def _preference(preset: Preset) -> tuple:
    # As find_preset ranks presets that share weights: plain generation first, a user's (calibrated) over a
    # built-in, then by name.
    return (preset.needs_image, not preset.is_user, preset.name)


def _is_module(value: Any) -> bool:
    import torch

    return isinstance(value, torch.nn.Module)


def _loaded_from(pipe_or_transformer: Any) -> list[str]:
    """Where the pipeline (or transformer) was loaded from, as diffusers recorded it: hub ids or folders."""
    places = [getattr(pipe_or_transformer, "name_or_path", None)]
    places += [
        getattr(getattr(module, "config", None), "_name_or_path", None) for module in _modules(pipe_or_transformer)
    ]
    found = []
    for place in places:
        if isinstance(place, (str, Path)) and str(place) and str(place) not in found:
            found.append(str(place))
    return found


def _modules(pipe_or_transformer: Any) -> Iterable[Any]:
    try:
        return denoisers(pipe_or_transformer).values()
    except TeaCacheError:
        return ()


def _by_location(location: str, presets: list[Preset], pipeline: str | None) -> tuple[Preset, str] | None:
    """The preset `location` names (a hub id or a folder), and how it was matched."""

    def best(matches: list[Preset]) -> Preset | None:
        return min(matches, key=lambda p: (p.pipeline != pipeline, *_preference(p)), default=None)

    exact = best([p for p in presets if p.model == location])
    if exact is not None:
        return exact, f"{'local path' if _looks_local(location) else 'hub id'} {location}"
    if not _looks_local(location):
        return None
    folder = _pipeline_folder(Path(location).expanduser())
    embedded = best([p for p in presets if p.embedded is not None and _same_folder(_embedded_folder(p), folder)])
    if embedded is not None:
        return embedded, f"embedded model {embedded.embedded}"
    hub_id = _hub_cache_id(folder)
    if hub_id is not None:
        cached = best([p for p in presets if p.model == hub_id])
        if cached is not None:
            return cached, f"hub id {hub_id} (its cached copy {location})"
    named = best([p for p in presets if "/" in p.model and p.model.rsplit("/", 1)[1].lower() == folder.name.lower()])
    if named is not None:
        return named, f"local folder {location}, named like {named.model}"
    return None


def _looks_local(location: str) -> bool:
    """A folder rather than a hub id: absolute or relative, or simply there."""
    path = Path(location).expanduser()
    return path.is_absolute() or location.startswith((".", "~")) or path.exists()


def _pipeline_folder(path: Path) -> Path:
    """The pipeline's folder: a transformer loaded from `folder/transformer` records that subfolder."""
    return path.parent if path.name in DENOISER_COMPONENTS else path


def _hub_cache_id(folder: Path) -> str | None:
    """`org/name` for a Hugging Face cache snapshot (…/models--org--name/snapshots/REVISION)."""
    for part in reversed(folder.parts):
        match = HUB_CACHE_FOLDER.match(part)
        if match:
            return f"{match['org']}/{match['name']}"
    return None


def _embedded_folder(preset: Preset) -> Path | None:
    """Where an embedded preset's pipeline is, without building it."""
    from .embedded import SHIPPED_MODELS, MissingShippedModel, built_model_dir, shipped_model_path

    try:
        return (
            shipped_model_path(preset.embedded)
            if preset.embedded in SHIPPED_MODELS
            else built_model_dir(preset.embedded)
        )
    except MissingShippedModel:
        return None


def _same_folder(one: Path | None, other: Path) -> bool:
    try:
        return one is not None and one.resolve() == other.resolve()
    except OSError:
        return False
