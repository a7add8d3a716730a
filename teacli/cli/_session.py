"""What generate and bench share: resolving the model, loading it, and the TeaCache config."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..engine.hook import TeaCacheConfig
from ..engine.plan import Plan
from ..generation.measure import Run, measure_generation
from ..generation.preparation import CacheOptions, LoadOptions, prepare_pipeline
from ..generation.runner import GenerationRequest, per_prompt_argument
from ..models.catalog import Preset
from ..models.loading import check_extractor, pick_device, pick_dtype, resolve_preset, teacache_configs
from ._app import CLIError, stderr
from ._options import COEFFICIENTS_OPTION_SOURCE, Device, DType


@dataclass
class Session:
    preset: Preset
    pipe: Any
    coefficients: tuple[float, ...] | None = None  # the user's --coefficients, for every denoiser
    cache: CacheOptions = field(default_factory=CacheOptions)  # --start, --end, --max-cached-in-row, ...

    def config(
        self, thresh: float | None = None, coefficients: tuple[float, ...] | None = None, plan: Plan | None = None
    ) -> TeaCacheConfig | dict[str, TeaCacheConfig]:
        """The preset's TeaCache config; one per denoiser where the preset has expert overrides.
        A threshold (the user's --thresh), a plan (for --budget) and coefficients (--coefficients, else the
        session's) given here apply to every denoiser, and so do the session's cache options."""
        configs = teacache_configs(
            self.preset,
            thresh,
            coefficients=coefficients if coefficients is not None else self.coefficients,
            coefficients_source=COEFFICIENTS_OPTION_SOURCE,
            plan=plan,
        )
        return self.cache.apply(configs)

    @property
    def coefficients_source(self) -> str:
        return COEFFICIENTS_OPTION_SOURCE if self.coefficients is not None else self.preset.coefficients_source


def resolve(model: str | None, offline: bool = False) -> Preset:
    preset = resolve_preset(model, offline=offline)
    check_extractor(preset)
    return preset


# Option -> the pipeline argument it sets; an option the pipeline cannot take is an error, not ignored.
OPTION_ARGUMENTS = {
    "--guidance": "guidance_scale",
    "--height": "height",
    "--width": "width",
    "--negative-prompt": "negative_prompt",
    "--image": "image",
    "--frames": "num_frames",
}


def check_pipeline_takes(preset: Preset, **given: Any) -> None:
    """Refuse, before loading, an option the user gave that this pipeline has no argument for."""
    import inspect

    import diffusers

    pipeline_class = getattr(diffusers, preset.pipeline, None)
    if pipeline_class is None:
        return  # load_pipeline says which class is missing
    parameters = inspect.signature(pipeline_class.__call__).parameters
    for option, argument in OPTION_ARGUMENTS.items():
        if given.get(option.lstrip("-").replace("-", "_")) is not None and argument not in parameters:
            raise CLIError(f"{preset.name} ({preset.pipeline}) takes no {argument}; drop {option}")
    if given.get("num_images") is not None and per_prompt_argument(parameters) is None:
        raise CLIError(f"{preset.name} ({preset.pipeline}) makes one output per call; drop --num-images")


def pipeline_media(preset: Preset):
    """What the preset's pipeline makes (image, video, audio), known before loading it."""
    import diffusers

    from ..generation.media import MediaKind, media_kind

    pipeline_class = getattr(diffusers, preset.pipeline, None)
    return MediaKind.image if pipeline_class is None else media_kind(pipeline_class)


def input_image(preset: Preset, path: Path | None) -> Any:
    """The --image the user gave, read now; editing models without one are refused before loading."""
    from ..generation.runner import open_image

    if path is None:
        if preset.needs_image:
            raise CLIError(f"{preset.name} edits an input image: pass --image PATH (a PNG, JPEG or WebP)")
        return None
    return open_image(path)


def output_files(out: Path | None, count: int, kind: Any, overwrite: bool) -> list[Path]:
    """Where the outputs go, every one checked (and its metadata sidecar) before anything is loaded."""
    from ..generation.media import default_suffix, output_paths

    return output_paths(out, count, kind, Path.cwd(), overwrite, default_suffix(kind))


def open_session(
    preset: Preset,
    device: Device,
    dtype: DType,
    coefficients: tuple[float, ...] | None = None,
    load: LoadOptions | None = None,
    cache: CacheOptions | None = None,
) -> Session:
    torch_device = pick_device(device.value)
    load = load or LoadOptions()
    with stderr.status(f"loading {preset.name} ..."):
        pipe = prepare_pipeline(preset, torch_device, pick_dtype(dtype.value, torch_device), load)
    return Session(preset, pipe, coefficients, cache or CacheOptions())


@contextmanager
def step_progress(description: str, total: int) -> Iterator[Progress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        yield progress


def run_with_progress(session: Session, request: GenerationRequest, description: str, computed: Any = None) -> Run:
    """One measured generation (the same measuring code as bench) behind a progress bar."""
    with step_progress(description, request.steps) as progress:
        task = progress.add_task(description, total=request.steps)
        return measure_generation(
            session.pipe, request, computed, on_step=lambda step: progress.update(task, completed=step + 1)
        )
