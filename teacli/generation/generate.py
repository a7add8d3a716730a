"""One generation with TeaCache, as a library call: `generate(GenerationSpec(...))` -> GenerationSummary.

`teacli generate PROMPT` is this call behind option parsing and a rendered report. It runs in two halves so a
caller can tell what is on disk if it is interrupted: `prepare_generation` checks everything that can be checked
before the model loads (settings, policy, output paths) and `run_generation` loads, generates, measures and
writes the outputs with their metadata.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..engine.apply import apply_teacache
from ..models.catalog import Preset
from ..settings import PIPELINE_CHECKED, SETTINGS, check_given, setting_fields
from .caching import USER_COEFFICIENTS
from .checks import (
    check_rule_options,
    check_settings,
    chosen_warning,
    schedule_warning,
    steps_note,
    vocabulary_warning,
)
from .measure import Run, quality
from .media import MediaKind, check_output_path, image_writer, mp4_available, save_output
from .metadata import jsonable, output_metadata, request_fields
from .output import write_atomic
from .policy import Policy, choose_policy
from .preparation import CacheOptions, LoadOptions
from .progress import Progress
from .report import GenerationSummary
from .runner import GenerationError, GenerationRequest, fit_size, made_frames
from .session import (
    Session,
    check_fps,
    check_pipeline_takes,
    input_image,
    open_session,
    output_files,
    pipeline_media,
    resolve,
    run_with_progress,
)
from .strip import side_by_side

# The short run before a baseline, so neither measured run pays the one-time start-up costs.
WARMUP_STEPS = 2


@dataclass(frozen=True)
@setting_fields()
class GenerationSpec:
    """What to generate and how. Every generation setting of teacli.settings is a keyword-only field too (steps,
    seed, guidance, ..., image: a path or a PIL image, num_images: output i uses seed + i); None keeps the
    preset's value."""

    prompt: str
    model: str | Preset | None = None  # a preset name, hub id, local path or preset file; None: teacli-shapes
    _: KW_ONLY  # the rest by name (a setting's place among the fields follows the table's order)
    # the cache
    thresh: float | None = None  # TeaCache's rule at this threshold
    budget: str | int | None = None  # or a schedule of this many computed steps ("10", or a speedup: "3x")
    policy: str = "auto"
    coefficients: tuple[float, ...] | None = None  # in place of the preset's, for every denoiser
    cache: CacheOptions = field(default_factory=CacheOptions)
    load: LoadOptions = field(default_factory=LoadOptions)
    # where and how
    out: Path | None = None  # None: teacli-NNNN.png/.mp4/.wav in the current folder, first free
    overwrite: bool = False
    device: str = "auto"
    dtype: str = "auto"
    compare_baseline: bool = False  # also run without cache: measured speedup and quality
    save_baseline: Path | None = None  # keep the uncached outputs here, with their metadata (runs the baseline)
    strip: Path | None = None  # one picture, uncached beside cached, of every output (images; runs the baseline)
    strict: bool = False  # refuse, instead of warning about, settings that make caching useless

    @property
    def runs_baseline(self) -> bool:
        """Whether an uncached run is made too: to compare, or to keep its outputs or draw the strip."""
        return self.compare_baseline or self.save_baseline is not None or self.strip is not None


@dataclass(frozen=True)
class PreparedGeneration:
    """A spec checked against its model before loading it: the request, the policy and the output paths."""

    spec: GenerationSpec
    preset: Preset
    kind: MediaKind
    request: GenerationRequest
    policy: Policy
    outputs: list[Path]
    existing: frozenset[Path]  # files that exist now (to be replaced): not this run's if it is interrupted
    baseline_outputs: list[Path] = field(default_factory=list)  # where the uncached outputs go (save_baseline)
    strip: Path | None = None

    def files(self) -> list[Path]:
        """Every file this run writes: the outputs, the uncached outputs kept, the strip."""
        return [*self.outputs, *self.baseline_outputs, *([self.strip] if self.strip is not None else [])]

    def written(self) -> list[Path]:
        """The files this run has written so far."""
        return [path for path in self.files() if path.exists() and path not in self.existing]

    def on_disk(self) -> str:
        """What an interrupted run leaves: the outputs it wrote, or that it wrote nothing."""
        written = self.written()
        return f"wrote only {', '.join(map(str, written))}" if written else "nothing was written"


def generate(spec: GenerationSpec, progress: Progress | None = None) -> GenerationSummary:
    """Generate `spec.num_images` outputs with TeaCache, write them with their metadata, and report."""
    progress = progress or Progress()
    return run_generation(prepare_generation(spec, progress), progress)


def prepare_generation(spec: GenerationSpec, progress: Progress | None = None) -> PreparedGeneration:
    """Everything checked and decided before the model loads; warnings go to `progress` (refused when strict)."""
    progress = progress or Progress()
    check_given({setting.name: getattr(spec, setting.name) for setting in SETTINGS}, GenerationError)
    preset = resolve(spec.model, offline=spec.load.offline)
    check_pipeline_takes(
        preset,
        **{setting.name: getattr(spec, setting.name) for setting in PIPELINE_CHECKED},
        num_images=spec.num_images if spec.num_images > 1 else None,
    )
    kind = pipeline_media(preset)
    check_fps(preset, kind, spec.fps)
    source_image = input_image(preset, spec.image)
    outputs = output_files(spec.out, spec.num_images, kind, spec.overwrite)
    baseline_outputs, strip = _comparison_files(spec, kind, outputs)
    request = GenerationRequest.from_preset(
        preset,
        spec.prompt,
        **{setting.name: getattr(spec, setting.name) for setting in SETTINGS if setting.name != "image"},
        image=source_image,
    )
    if kind is not MediaKind.video:  # a preset's frames or fps mean nothing to an image or sound model
        request = replace(request, frames=None, fps=None)
    policy = choose_policy(preset, request.steps, policy=spec.policy, thresh=spec.thresh, budget=spec.budget)
    check_rule_options(policy, spec.cache)
    check_settings([schedule_warning(request.steps), chosen_warning(policy, preset)], spec.strict, progress)
    check_settings([vocabulary_warning(preset, spec.prompt)], False, progress)  # not a caching matter: never refused
    files = [*outputs, *baseline_outputs, *([strip] if strip is not None else [])]
    existing = frozenset(path for path in files if path.exists())
    return PreparedGeneration(spec, preset, kind, request, policy, outputs, existing, baseline_outputs, strip)


def _comparison_files(spec: GenerationSpec, kind: MediaKind, outputs: list[Path]) -> tuple[list[Path], Path | None]:
    """Where save_baseline and strip go, checked like the outputs before anything loads."""
    baseline = []
    if spec.save_baseline is not None:
        baseline = output_files(Path(spec.save_baseline), spec.num_images, kind, spec.overwrite)
    strip = None
    if spec.strip is not None:
        if kind is not MediaKind.image:
            raise GenerationError(
                f"strip shows pictures side by side, and this model makes {kind.value}s; drop it", field="strip"
            )
        strip = check_output_path(Path(spec.strip), MediaKind.image, spec.overwrite, metadata=False)
    resolved = [path.resolve() for path in [*outputs, *baseline, *([strip] if strip is not None else [])]]
    twice = next((path for path in resolved if resolved.count(path) > 1), None)
    if twice is not None:
        raise GenerationError(
            f"out, save_baseline and strip must be different files: {twice} is given twice",
            field=("out", "save_baseline", "strip"),
        )
    return baseline, strip


def run_generation(prepared: PreparedGeneration, progress: Progress | None = None) -> GenerationSummary:
    """Load the model, generate (after a warm-up and a baseline run when asked), write the outputs, report."""
    progress = progress or Progress()
    spec, preset = prepared.spec, prepared.preset
    session = open_session(preset, spec.device, spec.dtype, spec.coefficients, spec.load, spec.cache, progress)
    request, size_note = fit_size(session.pipe, prepared.request)
    check_settings([size_note], spec.strict, progress)
    baseline = None
    if spec.runs_baseline:
        run_with_progress(session, replace(request, steps=WARMUP_STEPS), "warm-up", progress=progress)
        baseline = run_with_progress(session, request, "baseline (no cache)", progress=progress)
    config = session.config(prepared.policy.thresh, plan=prepared.policy.plan)
    handle = apply_teacache(session.pipe, config)
    stats = handle.stats
    counts = lambda: (stats.computed, len(stats.records))  # noqa: E731
    result = run_with_progress(session, request, prepared.policy.label, counts, progress)
    handle.remove()
    request, frames_note = made_frames(request, result.output)
    check_settings([frames_note], False, progress)
    _save(prepared, session, request, result, prepared.outputs, config=config, stats=stats)
    if baseline is not None and prepared.baseline_outputs:
        uncached = dict(policy="none", thresh=None, coefficients=None, coefficients_source=None, cached=0)
        counts = dict(computed=baseline.computed, calls=baseline.total)
        _save(prepared, session, request, baseline, prepared.baseline_outputs, **uncached, **counts)
    if baseline is not None and prepared.strip is not None:
        labels = ("no cache", f"TeaCache: {stats.totals.executed}/{stats.totals.calls} calls run")
        sheet = side_by_side(baseline.outputs, result.outputs, labels)
        write_atomic(prepared.strip, image_writer(sheet, prepared.strip), spec.overwrite)
    return _summary(prepared, session, request, stats, result, baseline)


def _save(
    prepared: PreparedGeneration, session: Session, request: GenerationRequest, run: Run, paths: list[Path], **fields
) -> None:
    """Write a run's outputs, each with its metadata (`fields`: the config and stats, or what replaces them)."""
    spec = prepared.spec
    for index, (output, path) in enumerate(zip(run.outputs, paths)):
        extra = {"load": spec.load.to_dict(), "cache": spec.cache.given(), "batch": [index + 1, len(paths)]}
        metadata = output_metadata(
            request, prepared.preset, seconds=run.seconds, pipe=session.pipe, index=index, extra=extra, **fields
        )
        save_output(output, path, metadata, overwrite=spec.overwrite)


def _summary(
    prepared: PreparedGeneration, session: Session, request: GenerationRequest, stats: Any, result: Run, baseline: Any
) -> GenerationSummary:
    spec, preset, outs = prepared.spec, prepared.preset, prepared.outputs
    summary = GenerationSummary(
        model=preset.name,
        transformer=preset.transformer,
        thresh=prepared.policy.thresh,
        coefficients_source=session.coefficients_source,
        policy=prepared.policy,
        steps=request.steps,
        seconds=result.seconds,
        stats=stats,
        output=", ".join(map(str, outs)),
        outputs=[str(path) for path in outs],
        baseline_seconds=baseline.seconds if baseline else None,
        quality=quality(result.output, baseline.output) if baseline else None,
        media=None if prepared.kind is MediaKind.image else result.output.describe(),
        settings={"seed": request.seed, "num_images": spec.num_images, **spec.cache.given(), **spec.load.to_dict()},
        request=jsonable(request_fields(request)),
        baseline_outputs=[str(path) for path in prepared.baseline_outputs],
        strip=str(prepared.strip) if prepared.strip is not None else None,
    )
    summary.notes.extend(_notes(prepared, request))
    return summary


def _notes(prepared: PreparedGeneration, request: GenerationRequest) -> list[str]:
    """What the report adds below its table: where the coefficients came from, batches, compiling, GIFs."""
    spec, preset = prepared.spec, prepared.preset
    notes = []
    if spec.coefficients is not None:
        notes.append(
            f"--coefficients {', '.join(f'{c:g}' for c in spec.coefficients)} used in place of the preset's "
            f"({preset.coefficients_source})"
        )
    if prepared.policy.plan is None and spec.coefficients is None:
        note = steps_note(preset, request.steps)
        if note is not None:
            notes.append(note)
    if spec.num_images > 1:
        notes.append(
            f"{spec.num_images} outputs in one batch share one TeaCache state per branch: a call is reused for all "
            "or none"
        )
    if prepared.baseline_outputs:
        notes.append(f"uncached outputs kept: {', '.join(map(str, prepared.baseline_outputs))}")
    if prepared.strip is not None:
        notes.append(f"uncached beside cached: {prepared.strip}")
    if spec.load.compile and not spec.runs_baseline:
        notes.append("--compile: this run's time includes compiling the blocks; --compare-baseline warms up")
    if prepared.kind is MediaKind.video and prepared.outputs[0].suffix.lower() == ".gif" and not mp4_available():
        notes.append("no MP4 encoder installed, so the video is a GIF: pip install 'teacli[video]' for MP4")
    return notes


__all__ = ["USER_COEFFICIENTS", "GenerationSpec", "PreparedGeneration", "generate", "prepare_generation"]
