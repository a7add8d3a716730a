"""teacli bench: TeaCache beside vanilla and the other caches, on the user's own model and machine."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ..limits import short
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
    check_policy,
    check_ranges,
    check_seeds,
    check_text,
    load_options,
    parse_coefficients,
    parse_thresholds,
)

BENCH_PROMPT = "a red circle on a blue background"
THRESHOLDS = "0.1,0.2,0.4,0.6"
SWEEP_THRESHOLDS = "0.05,0.1,0.2,0.3,0.5,0.8"  # with --sweep: from about 40 to 10 computed calls of 56 on teacli-shapes
AT_CALLS_FORM = "comma-separated numbers of computed transformer calls per picture, e.g. 12,16,20,24,32"


def parse_at_calls(text: str | None) -> list[int | float] | None:
    """--at-calls 12,16,20: the budgets, each a finite number above 0, in the order given, repeats dropped.
    Whether each is within the calls a picture takes is known once the first picture is made."""
    if text is None:
        return None
    budgets: list[int | float] = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise CLIError(f"--at-calls takes {AT_CALLS_FORM}; {short(part.strip())} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise CLIError(f"--at-calls takes {AT_CALLS_FORM}; {short(part.strip())} is not a finite number above 0")
        budgets.append(int(value) if value.is_integer() else value)
    return list(dict.fromkeys(budgets))


def check_at_calls(budgets: list[int | float], total: int, steps: int) -> None:
    """Every budget within the transformer calls of one picture (`total`, counted on the first picture made)."""
    over = [budget for budget in budgets if budget > total]
    if over:
        raise CLIError(
            f"--at-calls {over[0]:g} is more than the {total} transformer calls a picture takes here "
            f"({steps} steps); give budgets up to {total}"
        )


def bench(
    model: ModelOpt = None,
    thresh: Annotated[
        str | None,
        typer.Option(
            "--thresh",
            "-t",
            help=f"Comma-separated thresholds [default: {THRESHOLDS}; with --sweep {SWEEP_THRESHOLDS}]",
        ),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Other caches beside TeaCache, comma-separated: fbcache, magcache, taylorseer, dbcache, "
            "or none [default: all that apply]",
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            "-b",
            help="Comma-separated budgets (computed steps, e.g. 6,8,10, or speedups, e.g. 3x): a teacache-plan row "
            "each (the preset's calibrated plan; teacache-uniform where it has none) [default: with --sweep, every "
            "budget the preset has a plan for, up to 60% of the steps]",
        ),
    ] = None,
    policy: Annotated[
        str,
        typer.Option("--policy", help="For --budget rows: auto (a calibrated plan, else uniform), plan or uniform"),
    ] = "auto",
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
    prompt: Annotated[
        str | None, typer.Option("--prompt", help=f"Prompt for every run [default: {BENCH_PROMPT!r}]")
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help="Text file, one prompt a line ('#' comments): every configuration runs on every prompt, "
            "prompt i with seed --seed + i; rows give the mean and spread over prompts",
        ),
    ] = None,
    num_prompts: Annotated[
        int | None, typer.Option("--num-prompts", help="With --prompts: the first N prompts [default: all]")
    ] = None,
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep", help="Sweep every cache across 5-6 settings, few to many computed calls, to draw each curve"
        ),
    ] = False,
    at_calls: Annotated[
        str | None,
        typer.Option(
            "--at-calls",
            help="Compare every cache at these computed calls per picture, e.g. 12,16,20,24,32: PSNR and SSIM "
            "interpolated along each one's curve (the frontier table and JSON key; implies --sweep)",
        ),
    ] = None,
    image: ImageOpt = None,
    runs: Annotated[
        int | None,
        typer.Option(
            "--runs", help="Measured runs per configuration (and prompt) [default: 3; 1 with --prompts or --at-calls]"
        ),
    ] = None,
    warmup: Annotated[
        int, typer.Option("--warmup", help="Unmeasured rounds before measuring (with --prompts: on the first prompt)")
    ] = 1,
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
    --runs, interleaved round-robin; speedup, ideal speedup, efficiency, PSNR, SSIM and peak memory.
    With --prompts (or --at-calls) every configuration runs on every prompt, and --at-calls compares the
    caches at equal computed calls."""
    from ..batch.prompts import read_prompts
    from ..bench.plot import check_plot_available, plot_bench, plot_frontier
    from ..generation.output import check_writable, save_json

    budgets = parse_at_calls(at_calls)
    frontier = prompts is not None or budgets is not None
    sweep = sweep or budgets is not None
    thresholds = parse_thresholds(thresh if thresh is not None else SWEEP_THRESHOLDS if sweep else THRESHOLDS)
    budget_texts = [part.strip() for part in budget.split(",")] if budget is not None else []
    if policy == "teacache":
        raise CLIError("bench always runs TeaCache's rule at --thresh; --policy chooses how --budget rows run")
    for text in budget_texts or [None]:
        check_policy(policy, text)
    user_coefficients = parse_coefficients(coefficients)
    check_ranges(
        steps=steps,
        runs=runs,
        warmup=warmup,
        height=height,
        width=width,
        guidance=guidance,
        seed=seed,
        num_prompts=num_prompts,
    )
    check_text("--prompt", prompt)
    if num_prompts is not None and prompts is None:
        raise CLIError("--num-prompts takes the first N of --prompts FILE; give --prompts too")
    if prompts is not None and prompt is not None:
        raise CLIError("give --prompt or --prompts FILE, not both: with --prompts the prompts come from the file")
    if isolate and frontier:
        raise CLIError("--isolate measures one prompt; drop it with --prompts or --at-calls (those run interleaved)")
    texts = [prompt if prompt is not None else BENCH_PROMPT]
    if prompts is not None:
        texts = read_prompts(prompts)[:num_prompts]
        check_seeds(seed, len(texts))
    if runs is None:
        runs = 1 if frontier else 3
    to_stdout = json_out is not None and str(json_out) == "-"
    if to_stdout:
        reserve_stdout_for_json("--json -")
    if json_out is not None and not to_stdout:
        check_writable(json_out, overwrite, kind="--json")
    if plot is not None and json_out is not None and not to_stdout and plot.resolve() == json_out.resolve():
        raise CLIError(f"--json and --plot both name {plot}; give each its own file")
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise CLIError(f"--plot {plot} must end in .png")
        check_writable(plot, overwrite, kind="--plot")
        check_plot_available()
    import_libraries()
    from rich.markup import escape

    from ..bench.benchmark import ConfigRunner, IsolatedJob, bench_configs, run_bench, run_isolated, run_prompts_bench
    from ..bench.peers import PEERS, parse_against
    from ..generation.report import render_bench, render_frontier, render_prompts_bench
    from ..generation.runner import GenerationRequest
    from ..models.loading import pick_device
    from ._checks import check_settings, run_policy, schedule_warning, thresh_warning
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
        texts[0],
        steps=steps,
        seed=seed,
        guidance=guidance,
        height=height,
        width=width,
        image=input_image(preset, image),
    )
    requests = [replace(request, prompt=text, seed=seed + index) for index, text in enumerate(texts)]
    check_settings([schedule_warning(request.steps), *(thresh_warning(t, preset) for t in thresholds)], strict)
    if not budget_texts and sweep:
        budget_texts = [str(b) for b in sorted(preset.plans.get(request.steps, {})) if 3 <= b <= 0.6 * request.steps]
    policies = list(
        {
            p.label: p for text in budget_texts if (p := run_policy(preset, request.steps, policy=policy, budget=text))
        }.values()
    )

    console = ReportConsole(stderr=to_stdout)  # with --json - stdout carries the JSON alone
    try:
        session = open_session(preset, device, dtype, user_coefficients, loading, caching)
        skipped = [(name, reason) for name in methods if (reason := PEERS[name].unavailable(session.pipe))]
        for name, reason in skipped:
            console.print(f"[yellow]skipping {name}:[/] {escape(reason)}", highlight=False)
        settings = [
            s for name in methods if name not in dict(skipped) for s in PEERS[name].settings(request.steps, wide=sweep)
        ]
        configs = bench_configs(thresholds, settings, policies)
        if frontier:
            total = (warmup + runs * len(requests)) * len(configs)
            with step_progress("bench", total) as progress:
                task = progress.add_task("bench", total=total)
                result = run_prompts_bench(
                    ConfigRunner(session.pipe, session.config, PEERS),
                    requests,
                    configs,
                    runs=runs,
                    warmup=warmup,
                    on_run=lambda label: progress.update(task, advance=1, description=label),
                    on_first=lambda run: check_at_calls(budgets or [], run.total, request.steps),
                )
            device_name, source = str(session.pipe.device), session.coefficients_source
        elif isolate:
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
    header = dict(
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
    if frontier:
        calls = result.calls_per_picture
        count = len(requests)
        seeds = f"seed {seed}" if count == 1 else f"seeds {seed}-{seed + count - 1}"
        title = (
            f"bench {preset.name}: {count} prompt{'s' if count > 1 else ''} ({seeds}), {request.steps} steps, "
            f"{calls} transformer calls per picture, {runs} run{'s' if runs > 1 else ''} per prompt, warm-up {warmup}, "
            f"interleaved, device {device_name}; transformer {share:.0%} of vanilla's time; "
            f"coefficients: {source}"
        )
        render_prompts_bench(result, title, console)
        data = result.to_dict(
            at_calls=budgets or [],
            **header,
            prompts_file=str(prompts) if prompts is not None else None,
            sweep=sweep,
        )
        if budgets:
            render_frontier(
                data["frontier"],
                f"frontier: PSNR dB / SSIM at equal computed calls of {calls} per picture, mean over {count} "
                f"prompt{'s' if count > 1 else ''}, interpolated along each cache's curve ({preset.name}, "
                f"{request.steps} steps)",
                console,
            )
    else:
        title = (
            f"bench {preset.name}: {request.steps} steps, {runs} runs, warm-up {warmup}, "
            f"{'isolated' if isolate else 'interleaved'}, device {device_name}; transformer {share:.0%} of vanilla's "
            f"time; coefficients: {source}"
        )
        render_bench(result, title, console)
        data = result.to_dict(**header)
    if to_stdout:
        print_json(data)
    elif json_out is not None:
        save_json(data, json_out, overwrite)
        console.print(f"wrote {json_out}")
    if plot is not None:
        (plot_frontier if frontier else plot_bench)(data, plot, overwrite)
        console.print(f"wrote {plot}")
