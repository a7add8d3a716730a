"""What generate, `--prompts` and bench share: the model resolved, checked against what was asked, and loaded."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.plan import Plan
from ..models.catalog import Preset
from ..models.loading import check_extractor, pick_device, pick_dtype, resolve_preset
from ..models.memory import check_on_device
from ..settings import PIPELINE_CHECKED
from .caching import Configs, coefficients_source, teacache_configs
from .measure import Run, measure_generation
from .media import MediaKind, default_suffix, media_kind, output_paths
from .preparation import CacheOptions, LoadOptions, prepare_pipeline
from .progress import Progress
from .runner import GenerationError, GenerationRequest, open_image, per_prompt_argument


@dataclass
class Session:
    """A loaded pipeline with the user's coefficients and cache options, ready to make TeaCache configs."""

    preset: Preset
    pipe: Any
    coefficients: tuple[float, ...] | None = None  # the user's coefficients, for every denoiser
    cache: CacheOptions = field(default_factory=CacheOptions)  # start, end, max_cached_in_row, ...

    def config(
        self, thresh: float | None = None, coefficients: tuple[float, ...] | None = None, plan: Plan | None = None
    ) -> Configs:
        """The preset's TeaCache config (one per denoiser where the preset has expert overrides), with a
        threshold, a plan and coefficients (else the session's) for every denoiser, and the session's cache
        options (generation.caching.teacache_configs)."""
        return teacache_configs(
            self.preset,
            thresh,
            coefficients=coefficients if coefficients is not None else self.coefficients,
            plan=plan,
            cache=self.cache,
        )

    @property
    def coefficients_source(self) -> str:
        return coefficients_source(self.preset, self.coefficients)


def resolve(model: str | Preset | None, offline: bool = False) -> Preset:
    """A preset for what the user named (a preset name, hub id, path or preset file), its extractor checked."""
    preset = model if isinstance(model, Preset) else resolve_preset(model, offline=offline)
    check_extractor(preset)
    return preset


def pipeline_class(preset: Preset) -> Any:
    import diffusers

    return getattr(diffusers, preset.pipeline, None)


def check_pipeline_takes(preset: Preset, **given: Any) -> None:
    """Refuse, before loading, a setting the user gave that this pipeline has no argument for (GenerationError;
    its text names the option, as the image is always the command line's --image)."""
    pipeline = pipeline_class(preset)
    if pipeline is None:
        return  # load_pipeline says which class is missing
    parameters = inspect.signature(pipeline.__call__).parameters
    for setting in PIPELINE_CHECKED:
        if given.get(setting.name) is not None and setting.arguments[0] not in parameters:
            raise GenerationError(
                f"{preset.name} ({preset.pipeline}) takes no {setting.arguments[0]}; drop {setting.flag}"
            )
    if given.get("num_images") is not None and per_prompt_argument(parameters) is None:
        raise GenerationError(
            f"{preset.name} ({preset.pipeline}) makes one output per call; drop num_images", field="num_images"
        )


def pipeline_media(preset: Preset) -> MediaKind:
    """What the preset's pipeline makes (image, video, audio), known before loading it."""
    pipeline = pipeline_class(preset)
    return MediaKind.image if pipeline is None else media_kind(pipeline)


def check_fps(preset: Preset, kind: MediaKind, fps: float | None) -> None:
    if fps is not None and kind is not MediaKind.video:
        raise GenerationError(f"{preset.name} makes {kind.value}s, not videos; drop fps", field="fps")


def input_image(preset: Preset, image: Any) -> Any:
    """The input image (a path, read now, or a PIL image); editing models without one are refused before loading."""
    if image is None:
        if preset.needs_image:
            raise GenerationError(f"{preset.name} edits an input image: pass --image PATH (a PNG, JPEG or WebP)")
        return None
    return open_image(image) if isinstance(image, (str, Path)) else image


def output_files(out: Path | None, count: int, kind: MediaKind, overwrite: bool) -> list[Path]:
    """Where the outputs go, every one checked (and its metadata sidecar) before anything is loaded."""
    return output_paths(out, count, kind, Path.cwd(), overwrite, default_suffix(kind))


def open_session(
    preset: Preset,
    device: str = "auto",
    dtype: str = "auto",
    coefficients: Sequence[float] | None = None,
    load: LoadOptions | None = None,
    cache: CacheOptions | None = None,
    progress: Progress | None = None,
) -> Session:
    """The preset's pipeline loaded on `device` ("auto": the best there is) and prepared (LoRA, compile)."""
    torch_device = pick_device(device)
    load = load or LoadOptions()
    check_on_device(load.offload, load.quantize, torch_device)  # before "loading ..." is said
    progress = progress or Progress()
    with progress.loading(f"loading {preset.name} ..."):
        pipe = prepare_pipeline(preset, torch_device, pick_dtype(dtype, torch_device), load)
    coefficients = tuple(coefficients) if coefficients is not None else None
    return Session(preset, pipe, coefficients, cache or CacheOptions())


def run_with_progress(
    session: Session,
    request: GenerationRequest,
    description: str,
    computed: Any = None,
    progress: Progress | None = None,
) -> Run:
    """One measured generation (the same measuring code as bench), each step told to `progress`."""
    with (progress or Progress()).steps(description, request.steps) as on_step:
        return measure_generation(session.pipe, request, computed, on_step=on_step)
