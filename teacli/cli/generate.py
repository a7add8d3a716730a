"""teacli generate: one image with TeaCache, and a report of what it skipped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ._app import EXIT_INTERRUPTED, CLIError, print_error, setup_logging
from ._options import (
    CoefficientsOpt,
    Device,
    DeviceOpt,
    DType,
    DTypeOpt,
    GuidanceOpt,
    HeightOpt,
    ImageOpt,
    ModelOpt,
    SeedOpt,
    StepsOpt,
    VerboseOpt,
    WidthOpt,
    check_positive,
    check_steps,
    check_thresh,
    parse_coefficients,
)

WARMUP_STEPS = 2


def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw")],
    model: ModelOpt = None,
    thresh: Annotated[
        float | None,
        typer.Option("--thresh", "-t", help="TeaCache threshold; 0 computes every step [default: the preset's]"),
    ] = None,
    coefficients: CoefficientsOpt = None,
    steps: StepsOpt = None,
    seed: SeedOpt = 0,
    guidance: GuidanceOpt = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
    image: ImageOpt = None,
    negative_prompt: Annotated[
        str | None, typer.Option("--negative-prompt", help="Negative prompt (true CFG: see --true-cfg)")
    ] = None,
    true_cfg: Annotated[
        float | None, typer.Option("--true-cfg", help="True-CFG scale used with --negative-prompt")
    ] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="Video frames [default: the preset's]")] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Video frame rate [default: the preset's or 16]")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Output file [default: teacli-NNNN.png/.mp4/.wav by what the model makes, first free]"
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists")] = False,
    device: DeviceOpt = Device.auto,
    dtype: DTypeOpt = DType.auto,
    compare_baseline: Annotated[
        bool, typer.Option("--compare-baseline", help="Also run without cache: measured speedup and PSNR")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Generate an image, video or sound with TeaCache and report calls computed vs cached."""
    from rich.console import Console

    from ..calibration import steps_note
    from ..hook import apply_teacache
    from ..measure import quality
    from ..media import MediaKind, check_output_path, default_suffix, mp4_available, save_output
    from ..output import next_free_path
    from ..report import GenerationSummary, render_generation
    from ..runner import GenerationRequest
    from ._session import check_pipeline_takes, input_image, open_session, pipeline_media, resolve, run_with_progress

    # Everything the user typed is checked before the model is loaded.
    if thresh is not None:
        check_thresh(thresh)
    user_coefficients = parse_coefficients(coefficients)
    check_steps(steps)
    check_positive("--height", height)
    check_positive("--width", width)
    check_positive("--frames", frames)
    if fps is not None and not fps > 0:
        raise CLIError(f"--fps must be positive, got {fps}")
    setup_logging(verbose)
    preset = resolve(model)
    check_pipeline_takes(
        preset,
        guidance=guidance,
        height=height,
        width=width,
        negative_prompt=negative_prompt,
        image=image,
        frames=frames,
    )
    kind = pipeline_media(preset)
    if fps is not None and kind is not MediaKind.video:
        raise CLIError(f"{preset.name} makes {kind.value}s, not videos; drop --fps")
    source_image = input_image(preset, image)
    if out is None:
        out = next_free_path(Path.cwd(), "teacli", default_suffix(kind))
    else:
        out = check_output_path(out, kind, overwrite)
    request = GenerationRequest.from_preset(
        preset,
        prompt,
        steps=steps,
        seed=seed,
        guidance=guidance,
        height=height,
        width=width,
        negative_prompt=negative_prompt,
        true_cfg=true_cfg,
        image=source_image,
        frames=frames,
        fps=fps,
    )
    threshold = preset.thresh if thresh is None else thresh

    try:
        session = open_session(preset, device, dtype, user_coefficients)
        baseline = None
        if compare_baseline:
            # One short run first, so neither measured run pays the one-time start-up costs.
            run_with_progress(session, replace(request, steps=WARMUP_STEPS), "warm-up")
            baseline = run_with_progress(session, request, "baseline (no cache)")
        handle = apply_teacache(session.pipe, session.config(thresh))
        stats = handle.stats
        result = run_with_progress(
            session, request, f"TeaCache {threshold:g}", lambda: (stats.computed, len(stats.records))
        )
        handle.remove()
        save_output(result.output, out)
    except KeyboardInterrupt:
        print_error("interrupted; nothing was written")
        raise typer.Exit(EXIT_INTERRUPTED) from None

    summary = GenerationSummary(
        model=preset.name,
        transformer=preset.transformer,
        thresh=threshold,
        coefficients_source=session.coefficients_source,
        steps=request.steps,
        seconds=result.seconds,
        stats=handle.stats,
        output=str(out),
        baseline_seconds=baseline.seconds if baseline else None,
        quality=quality(result.output, baseline.output) if baseline else None,
        media=None if kind is MediaKind.image else result.output.describe(),
    )
    if user_coefficients is not None:
        summary.notes.append(
            f"--coefficients {', '.join(f'{c:g}' for c in user_coefficients)} used in place of the preset's "
            f"({preset.coefficients_source})"
        )
    if user_coefficients is None and (note := steps_note(preset, request.steps)) is not None:
        summary.notes.append(note)
    if kind is MediaKind.video and out.suffix.lower() == ".gif" and not mp4_available():
        summary.notes.append("no MP4 encoder installed, so the video is a GIF: pip install 'teacli[video]' for MP4")
    render_generation(summary, Console())
