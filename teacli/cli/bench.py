"""teacli bench: TeaCache beside vanilla and the other caches, on the user's own model and machine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ._app import (
    CLIError,
    import_libraries,
    interrupt_exit_code,
    print_error,
    print_json,
    reserve_stdout_for_json,
    setup_logging,
)
from ._options import (
    COEFFICIENTS_OPTION_SOURCE,
    AllowPickleOpt,
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
    RetStepsOpt,
    SeedOpt,
    StartOpt,
    StepsOpt,
    StrictOpt,
    VerboseOpt,
    WidthOpt,
    cache_options,
    check_ranges,
    check_text,
    load_options,
    parse_coefficients,
    parse_thresholds,
)

BENCH_PROMPT = "a red circle on a blue background"


def bench(
    model: ModelOpt = None,
    thresh: Annotated[str, typer.Option("--thresh", "-t", help="Comma-separated thresholds")] = "0.1,0.2,0.4,0.6",
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Other caches beside TeaCache, comma-separated: fbcache, magcache, taylorseer, dbcache, "
            "or none [default: all that apply]",
        ),
    ] = None,
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
    prompt: Annotated[str, typer.Option("--prompt", help="Prompt for every run")] = BENCH_PROMPT,
    image: ImageOpt = None,
    runs: Annotated[int, typer.Option("--runs", help="Measured runs per configuration")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", help="Unmeasured rounds before measuring")] = 1,
    isolate: Annotated[
        bool, typer.Option("--isolate", help="Run each configuration in a process of its own instead of interleaved")
    ] = False,
    compare_baseline: Annotated[
        bool, typer.Option("--compare-baseline", hidden=True, help="Kept for scripts: vanilla always runs now")
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the results to this JSON file; - prints them on stdout")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw speedup against PSNR to this PNG (needs teacli[plot])")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --json / --plot if they exist")] = False,
    lora: LoraOpt = None,
    lora_scale: LoraScaleOpt = 1.0,
    compile: CompileOpt = False,
    device: DeviceOpt = Device.auto,
    dtype: DTypeOpt = DType.auto,
    allow_pickle: AllowPickleOpt = False,
    offline: OfflineOpt = False,
    strict: StrictOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Vanilla, TeaCache (threshold 0 and each --thresh) and the other caches, measured alike: median of
    --runs, interleaved round-robin; speedup, ideal speedup, efficiency, PSNR, SSIM and peak memory."""
    from ..output import check_writable, save_json
    from ..plot import check_plot_available, plot_bench

    thresholds = parse_thresholds(thresh)
    user_coefficients = parse_coefficients(coefficients)
    check_ranges(steps=steps, runs=runs, warmup=warmup, height=height, width=width, guidance=guidance, seed=seed)
    check_text("--prompt", prompt)
    to_stdout = json_out is not None and str(json_out) == "-"
    if to_stdout:
        reserve_stdout_for_json("--json -")
    if json_out is not None and not to_stdout:
        check_writable(json_out, overwrite, kind="--json")
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise CLIError(f"--plot {plot} must end in .png")
        check_writable(plot, overwrite, kind="--plot")
        check_plot_available()
    import_libraries()
    from rich.console import Console
    from rich.markup import escape

    from ..benchmark import ConfigRunner, IsolatedJob, bench_configs, run_bench, run_isolated
    from ..loading import pick_device
    from ..peers import PEERS, parse_against
    from ..report import render_bench
    from ..runner import GenerationRequest
    from ._checks import check_settings, schedule_warning, thresh_warning
    from ._session import check_pipeline_takes, input_image, open_session, resolve, step_progress

    try:
        methods = parse_against(against)
    except ValueError as error:
        raise CLIError(str(error)) from None
    loading = load_options(allow_pickle, offline, lora, lora_scale, compile)
    caching = cache_options(start, end, ret_steps, max_cached_in_row, cache_device)
    setup_logging(verbose)
    if not verbose:  # one "TeaCache enabled" line per run would bury the table
        logging.getLogger("teacli").setLevel(logging.WARNING)
    preset = resolve(model, offline=offline)
    check_pipeline_takes(preset, guidance=guidance, height=height, width=width, image=image)
    request = GenerationRequest.from_preset(
        preset,
        prompt,
        steps=steps,
        seed=seed,
        guidance=guidance,
        height=height,
        width=width,
        image=input_image(preset, image),
    )
    check_settings([schedule_warning(request.steps), *(thresh_warning(t, preset) for t in thresholds)], strict)

    console = Console(stderr=to_stdout)  # with --json - stdout carries the JSON alone
    try:
        session = open_session(preset, device, dtype, user_coefficients, loading, caching)
        skipped = [(name, reason) for name in methods if (reason := PEERS[name].unavailable(session.pipe))]
        for name, reason in skipped:
            console.print(f"[yellow]skipping {name}:[/] {escape(reason)}", highlight=False)
        settings = [s for name in methods if name not in dict(skipped) for s in PEERS[name].settings(request.steps)]
        configs = bench_configs(thresholds, settings)
        if isolate:
            del session  # each configuration loads its own copy
            jobs = [
                IsolatedJob(
                    model, device.value, dtype.value, user_coefficients, request, c, runs, warmup, loading, caching
                )
                for c in configs
            ]
            with step_progress("bench", len(jobs)) as progress:
                task = progress.add_task("bench (isolated)", total=len(jobs))
                result = run_isolated(jobs, on_config=lambda label: progress.update(task, advance=1))
            device_name, source = str(pick_device(device.value)), preset.coefficients_source
            if user_coefficients is not None:
                source = COEFFICIENTS_OPTION_SOURCE
        else:
            total = (warmup + runs) * len(configs)
            with step_progress("bench", total) as progress:
                task = progress.add_task("bench", total=total)
                result = run_bench(
                    ConfigRunner(session.pipe, session.config, PEERS),
                    request,
                    configs,
                    runs=runs,
                    warmup=warmup,
                    on_run=lambda label: progress.update(task, advance=1, description=label),
                )
            device_name, source = str(session.pipe.device), session.coefficients_source
        result.skipped = skipped
    except KeyboardInterrupt as interrupt:
        print_error("interrupted; nothing was written")
        raise typer.Exit(interrupt_exit_code(interrupt)) from None

    share = result.vanilla.transformer_share
    title = (
        f"bench {preset.name}: {request.steps} steps, {runs} runs, warm-up {warmup}, "
        f"{'isolated' if isolate else 'interleaved'}, device {device_name}; transformer {share:.0%} of vanilla's "
        f"time; coefficients: {source}"
    )
    render_bench(result, title, console)
    data = result.to_dict(
        model=preset.name,
        steps=request.steps,
        device=device_name,
        runs=runs,
        warmup=warmup,
        isolated=isolate,
        coefficients_source=source,
        **({"coefficients": list(user_coefficients)} if user_coefficients is not None else {}),
        settings={**caching.given(), **loading.to_dict()},
    )
    if to_stdout:
        print_json(data)
    elif json_out is not None:
        save_json(data, json_out, overwrite)
        console.print(f"wrote {json_out}")
    if plot is not None:
        plot_bench(data, plot, overwrite)
        console.print(f"wrote {plot}")
