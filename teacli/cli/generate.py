"""teacli generate: one image with TeaCache, and a report of what it skipped; or one output per prompt of a
prompts file (--prompts: see _prompts_run)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ._app import (
    CLIError,
    ReportConsole,
    import_libraries,
    interrupt_exit_code,
    print_error,
    print_json,
    reserve_stdout_for_json,
    setup_logging,
)
from ._options import (
    AllowPickleOpt,
    BudgetOpt,
    CacheDeviceOpt,
    CoefficientsOpt,
    CompileOpt,
    Device,
    DeviceOpt,
    DType,
    DTypeOpt,
    EndOpt,
    GuidanceOpt,
    HeightOpt,
    ImageOpt,
    LoraOpt,
    LoraScaleOpt,
    MaxCachedInRowOpt,
    ModelOpt,
    OfflineOpt,
    PolicyOpt,
    RetStepsOpt,
    SeedOpt,
    StartOpt,
    StepsOpt,
    StrictOpt,
    VerboseOpt,
    WidthOpt,
    cache_options,
    check_policy,
    check_ranges,
    check_seeds,
    check_text,
    check_thresh,
    load_options,
    parse_coefficients,
)

WARMUP_STEPS = 2


class UsageError(CLIError):
    """A command line that cannot be run as typed: exit code 2, as for a missing argument."""

    exit_code = 2


def generate(
    prompt: Annotated[
        str | None, typer.Argument(help="What to draw (or give --prompts FILE)", show_default=False)
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help="Make one output per prompt of FILE: one prompt a line, or JSONL with per-prompt seed and options; "
            "resumable, and split between processes under torchrun or accelerate launch",
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="With --prompts: where the outputs go [default: the current folder]"),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest", help="With --prompts: the JSONL record of what was made [default: OUT_DIR/manifest.jsonl]"
        ),
    ] = None,
    model: ModelOpt = None,
    thresh: Annotated[
        float | None,
        typer.Option("--thresh", "-t", help="TeaCache threshold; 0 computes every step [default: the preset's]"),
    ] = None,
    budget: BudgetOpt = None,
    policy: PolicyOpt = "auto",
    coefficients: CoefficientsOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    ret_steps: RetStepsOpt = None,
    max_cached_in_row: MaxCachedInRowOpt = None,
    cache_device: CacheDeviceOpt = None,
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
    num_images: Annotated[
        int,
        typer.Option(
            "--num-images", "-n", help="Outputs made in one batch; output i uses seed + i (files NAME-1, NAME-2, ...)"
        ),
    ] = 1,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Output file [default: teacli-NNNN.png/.mp4/.wav by what the model makes, first free]"
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists")] = False,
    lora: LoraOpt = None,
    lora_scale: LoraScaleOpt = 1.0,
    compile: CompileOpt = False,
    device: DeviceOpt = Device.auto,
    dtype: DTypeOpt = DType.auto,
    allow_pickle: AllowPickleOpt = False,
    offline: OfflineOpt = False,
    compare_baseline: Annotated[
        bool, typer.Option("--compare-baseline", help="Also run without cache: measured speedup and PSNR")
    ] = False,
    json_report: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout (the table goes to stderr)")
    ] = False,
    strict: StrictOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Generate an image, video or sound with TeaCache and report calls computed vs cached."""
    if (prompt is None) == (prompts is None):
        raise UsageError(
            "give a PROMPT or --prompts FILE, not both"
            if prompts is not None
            else "give a PROMPT, or --prompts FILE (one prompt a line, or JSONL) for many"
        )
    if prompts is None and (out_dir is not None or manifest is not None):
        raise CLIError("--out-dir and --manifest go with --prompts; for one prompt use --out")
    if prompts is not None:
        if out is not None:
            raise CLIError("--out names one file; with --prompts the outputs go to --out-dir, one per prompt")
        if num_images != 1:
            raise CLIError("--num-images goes with one PROMPT; with --prompts, repeat a line (each gets its own seed)")
        if compare_baseline:
            raise CLIError("--compare-baseline measures one PROMPT; drop it with --prompts (teacli bench compares)")
    # Everything the user typed is checked before the model is loaded.
    if thresh is not None:
        check_thresh(thresh)
    check_policy(policy, budget)
    user_coefficients = parse_coefficients(coefficients)
    check_ranges(
        steps=steps, height=height, width=width, frames=frames, num_images=num_images, fps=fps,
        guidance=guidance, true_cfg=true_cfg,
    )  # fmt: skip
    check_seeds(seed, num_images)
    check_text("the prompt", prompt)
    check_text("--negative-prompt", negative_prompt)
    if json_report:
        reserve_stdout_for_json("--json")
    import_libraries()

    from ..calibrate.coefficients import steps_note
    from ..engine.hook import apply_teacache
    from ..generation.measure import quality
    from ..generation.media import MediaKind, mp4_available, save_output
    from ..generation.metadata import output_metadata
    from ..generation.report import GenerationSummary, render_generation
    from ..generation.runner import GenerationRequest, fit_size, made_frames
    from ._checks import check_rule_options, check_settings, chosen_warning, run_policy, schedule_warning
    from ._prompts_run import generate_prompts
    from ._session import (
        check_pipeline_takes,
        input_image,
        open_session,
        output_files,
        pipeline_media,
        resolve,
        run_with_progress,
    )

    loading = load_options(allow_pickle, offline, lora, lora_scale, compile)
    caching = cache_options(start, end, ret_steps, max_cached_in_row, cache_device)
    setup_logging(verbose)
    preset = resolve(model, offline=offline)
    if prompts is not None:
        generate_prompts(
            prompts,
            preset,
            out_dir=out_dir,
            manifest=manifest,
            thresh=thresh,
            budget=budget,
            policy=policy,
            coefficients=user_coefficients,
            loading=loading,
            caching=caching,
            steps=steps,
            seed=seed,
            guidance=guidance,
            height=height,
            width=width,
            image=image,
            negative_prompt=negative_prompt,
            true_cfg=true_cfg,
            frames=frames,
            fps=fps,
            overwrite=overwrite,
            device=device,
            dtype=dtype,
            json_report=json_report,
            strict=strict,
        )
        return
    check_pipeline_takes(
        preset,
        guidance=guidance,
        height=height,
        width=width,
        negative_prompt=negative_prompt,
        image=image,
        frames=frames,
        num_images=num_images if num_images > 1 else None,
    )
    kind = pipeline_media(preset)
    if fps is not None and kind is not MediaKind.video:
        raise CLIError(f"{preset.name} makes {kind.value}s, not videos; drop --fps")
    source_image = input_image(preset, image)
    outs = output_files(out, num_images, kind, overwrite)
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
        num_images=num_images,
    )
    if kind is not MediaKind.video:  # a preset's frames or fps mean nothing to an image or sound model
        request = replace(request, frames=None, fps=None)
    chosen = run_policy(preset, request.steps, policy=policy, thresh=thresh, budget=budget)
    check_rule_options(chosen, caching)
    check_settings([schedule_warning(request.steps), chosen_warning(chosen, preset)], strict)

    existing = {path for path in outs if path.exists()}  # files --overwrite will replace
    try:
        session = open_session(preset, device, dtype, user_coefficients, loading, caching)
        request, size_note = fit_size(session.pipe, request)
        check_settings([size_note], strict)
        baseline = None
        if compare_baseline:
            # One short run first, so neither measured run pays the one-time start-up costs.
            run_with_progress(session, replace(request, steps=WARMUP_STEPS), "warm-up")
            baseline = run_with_progress(session, request, "baseline (no cache)")
        config = session.config(chosen.thresh, plan=chosen.plan)
        handle = apply_teacache(session.pipe, config)
        stats = handle.stats
        result = run_with_progress(session, request, chosen.label, lambda: (stats.computed, len(stats.records)))
        handle.remove()
        request, frames_note = made_frames(request, result.output)
        check_settings([frames_note], strict=False)
        for index, (output, path) in enumerate(zip(result.outputs, outs)):
            metadata = output_metadata(
                request,
                preset,
                config=config,
                stats=stats,
                seconds=result.seconds,
                pipe=session.pipe,
                index=index,
                extra={"load": loading.to_dict(), "cache": caching.given(), "batch": [index + 1, len(outs)]},
            )
            save_output(output, path, metadata, overwrite=overwrite)
    except KeyboardInterrupt as interrupt:
        # A Ctrl-C during the final renames is held until the files are in place: say what is on disk.
        written = [path for path in outs if path.exists() and path not in existing]
        done = f"wrote only {', '.join(map(str, written))}" if written else "nothing was written"
        print_error(f"interrupted; {done}")
        raise typer.Exit(interrupt_exit_code(interrupt)) from None

    summary = GenerationSummary(
        model=preset.name,
        transformer=preset.transformer,
        thresh=chosen.thresh,
        coefficients_source=session.coefficients_source,
        policy=chosen,
        steps=request.steps,
        seconds=result.seconds,
        stats=handle.stats,
        output=", ".join(map(str, outs)),
        outputs=[str(path) for path in outs],
        baseline_seconds=baseline.seconds if baseline else None,
        quality=quality(result.output, baseline.output) if baseline else None,
        media=None if kind is MediaKind.image else result.output.describe(),
        settings={"seed": request.seed, "num_images": num_images, **caching.given(), **loading.to_dict()},
    )
    if user_coefficients is not None:
        summary.notes.append(
            f"--coefficients {', '.join(f'{c:g}' for c in user_coefficients)} used in place of the preset's "
            f"({preset.coefficients_source})"
        )
    if chosen.plan is None and user_coefficients is None and (note := steps_note(preset, request.steps)) is not None:
        summary.notes.append(note)
    if num_images > 1:
        summary.notes.append(
            f"{num_images} outputs in one batch share one TeaCache state per branch: a call is reused for all or none"
        )
    if compile and not compare_baseline:
        summary.notes.append("--compile: this run's time includes compiling the blocks; --compare-baseline warms up")
    if kind is MediaKind.video and outs[0].suffix.lower() == ".gif" and not mp4_available():
        summary.notes.append("no MP4 encoder installed, so the video is a GIF: pip install 'teacli[video]' for MP4")
    if json_report:
        render_generation(summary, ReportConsole(stderr=True))
        print_json(summary.to_dict())
    else:
        render_generation(summary, ReportConsole())


# --- many prompts: generate --prompts FILE -----------------------------------------------------------------------
