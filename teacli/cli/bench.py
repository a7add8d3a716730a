"""teacli bench: TeaCache beside vanilla and the other caches, on the user's own model and machine."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import (
    CLIError,
    ReportConsole,
    import_libraries,
    interrupted,
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
    NumPromptsOpt,
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
from ._progress import RichProgress, bar, loading

BENCH_PROMPT = "a red circle on a blue background"
THRESHOLDS = "0.1,0.2,0.4,0.6"
SWEEP_THRESHOLDS = "0.05,0.1,0.2,0.3,0.5,0.8"  # with --sweep: from about 40 to 10 computed calls of 56 on teacli-shapes


ThreshOption = Annotated[
    str | None,
    typer.Option(
        "--thresh",
        "-t",
        help="Comma-separated thresholds",
        show_default=f"{THRESHOLDS}; with --sweep {SWEEP_THRESHOLDS}",
    ),
]
AgainstOption = Annotated[
    str | None,
    typer.Option(
        "--against",
        help="Other caches beside TeaCache, comma-separated: fbcache, magcache, taylorseer, dbcache, or none",
        show_default="all that apply",
    ),
]
BudgetOption = Annotated[
    str | None,
    typer.Option(
        "--budget",
        "-b",
        help="Comma-separated budgets (computed steps, e.g. 6,8,10, or speedups, e.g. 3x): a teacache-plan row "
        "each (the preset's calibrated plan; teacache-uniform where it has none)",
        show_default="with --sweep, every budget the preset has a plan for, up to 60% of the steps",
    ),
]
PolicyOption = Annotated[
    str,
    typer.Option("--policy", help="For --budget rows: auto (a calibrated plan, else uniform), plan or uniform"),
]
PromptOption = Annotated[str | None, typer.Option("--prompt", help="Prompt for every run", show_default=BENCH_PROMPT)]
PromptsOption = Annotated[
    Path | None,
    typer.Option(
        "--prompts",
        help="Text file, one prompt a line ('#' comments): every configuration runs on every prompt, "
        "prompt i with seed --seed + i; rows give the mean and spread over prompts",
    ),
]
SweepOption = Annotated[
    bool,
    typer.Option(
        "--sweep", help="Sweep every cache across 5-6 settings, few to many computed calls, to draw each curve"
    ),
]
AtCallsOption = Annotated[
    str | None,
    typer.Option(
        "--at-calls",
        help="Compare every cache at these computed calls per picture, e.g. 12,16,20,24,32: PSNR and SSIM "
        "interpolated along each one's curve (the frontier table and JSON key; implies --sweep)",
    ),
]
RunsOption = Annotated[
    int | None,
    typer.Option(
        "--runs",
        help="Measured runs per configuration (and prompt)",
        show_default="3; 1 with --prompts or --at-calls",
    ),
]
WarmupOption = Annotated[
    int, typer.Option("--warmup", help="Unmeasured rounds before measuring (with --prompts: on the first prompt)")
]
IsolateOption = Annotated[
    bool, typer.Option("--isolate", help="Run each configuration in a process of its own instead of interleaved")
]
CompareBaselineOption = Annotated[
    bool, typer.Option("--compare-baseline", hidden=True, help="Kept for scripts: vanilla always runs now")
]
JsonOutOption = Annotated[
    Path | None, typer.Option("--json", help="Also write the results to this JSON file; - prints them on stdout")
]
PlotOption = Annotated[
    Path | None, typer.Option("--plot", help="Also draw speedup against PSNR to this PNG (needs teacli[plot])")
]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace --json / --plot if they exist")]


def bench(
    model: ModelOpt = None,
    thresh: ThreshOption = None,
    against: AgainstOption = None,
    budget: BudgetOption = None,
    policy: PolicyOption = "auto",
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
    prompt: PromptOption = None,
    prompts: PromptsOption = None,
    num_prompts: NumPromptsOpt = None,
    sweep: SweepOption = False,
    at_calls: AtCallsOption = None,
    image: ImageOpt = None,
    runs: RunsOption = None,
    warmup: WarmupOption = 1,
    isolate: IsolateOption = False,
    compare_baseline: CompareBaselineOption = False,
    json_out: JsonOutOption = None,
    plot: PlotOption = None,
    overwrite: OverwriteOption = False,
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
    from ..bench.suite import BenchSpec, budget_policies, parse_at_calls, sweep_budgets

    budgets = parse_at_calls(at_calls)
    over_prompts = prompts is not None or budgets is not None
    sweep = sweep or budgets is not None
    thresholds = parse_thresholds(thresh if thresh is not None else SWEEP_THRESHOLDS if sweep else THRESHOLDS)
    budget_texts = _budget_texts(budget, policy)
    user_coefficients = parse_coefficients(coefficients)
    check_ranges(steps=steps, runs=runs, warmup=warmup, height=height, width=width, guidance=guidance, seed=seed,
                     num_prompts=num_prompts)  # fmt: skip
    texts = _prompt_texts(prompt, prompts, num_prompts, seed, isolate and over_prompts)
    to_stdout = _check_outputs(json_out, plot, overwrite)
    import_libraries()
    from ..generation.session import resolve

    methods = _methods(against)
    loading = load_options(allow_pickle, offline, lora, lora_scale, compile)
    caching = cache_options(start, end, ret_steps, max_cached_in_row, cache_device)
    _setup_logging(verbose)
    preset = resolve(model, offline=offline)
    asked = dict(steps=steps, guidance=guidance, height=height, width=width)
    requests = _requests(preset, texts, seed, asked, image, thresholds, strict)
    steps = requests[0].steps
    budget_texts = budget_texts or (sweep_budgets(preset, steps) if sweep else [])
    spec = BenchSpec(
        preset, requests, thresholds, budget_policies(preset, steps, policy, budget_texts), methods,
        over_prompts=over_prompts, at_calls=budgets or [], sweep=sweep,
        runs=runs if runs is not None else 1 if over_prompts else 3, warmup=warmup, isolate=isolate, model=model,
        device=device.value, dtype=dtype.value, coefficients=user_coefficients,
        coefficients_source=COEFFICIENTS_OPTION_SOURCE, load=loading, cache=caching,
        prompts_file=str(prompts) if prompts is not None else None,
    )  # fmt: skip
    console = ReportConsole(stderr=to_stdout)  # with --json - stdout carries the JSON alone
    _report(_run(spec, console), console, None if to_stdout else json_out, to_stdout, plot, overwrite)


def _run(spec: Any, console: Any) -> Any:
    """run_benchmark with its progress drawn: a spinner while loading, a bar while measuring."""
    from rich.markup import escape

    from ..bench.suite import BenchProgress, run_benchmark

    def skipping(method: str, reason: str) -> None:
        console.print(f"[yellow]skipping {method}:[/] {escape(reason)}", highlight=False)

    try:
        return run_benchmark(spec, BenchProgress(loading=loading, bar=bar, skipping=skipping))
    except KeyboardInterrupt as interrupt:
        interrupted("nothing was written", interrupt)


def _budget_texts(budget: str | None, policy: str) -> list[str]:
    """--budget as its parts, each checked with --policy before anything loads."""
    texts = [part.strip() for part in budget.split(",")] if budget is not None else []
    if policy == "teacache":
        raise CLIError("bench always runs TeaCache's rule at --thresh; --policy chooses how --budget rows run")
    for text in texts or [None]:
        check_policy(policy, text)
    return texts


def _prompt_texts(
    prompt: str | None, prompts: Path | None, num_prompts: int | None, seed: int, isolated_over_prompts: bool
) -> list[str]:
    """--prompt, or the first --num-prompts of --prompts FILE (prompt i with seed + i)."""
    from ..batch.prompts import read_prompts

    check_text("--prompt", prompt)
    if num_prompts is not None and prompts is None:
        raise CLIError("--num-prompts takes the first N of --prompts FILE; give --prompts too")
    if prompts is not None and prompt is not None:
        raise CLIError("give --prompt or --prompts FILE, not both: with --prompts the prompts come from the file")
    if isolated_over_prompts:
        raise CLIError("--isolate measures one prompt; drop it with --prompts or --at-calls (those run interleaved)")
    if prompts is None:
        return [prompt if prompt is not None else BENCH_PROMPT]
    texts = read_prompts(prompts)[:num_prompts]
    check_seeds(seed, len(texts))
    return texts


def _check_outputs(json_out: Path | None, plot: Path | None, overwrite: bool) -> bool:
    """--json and --plot checked writable before anything loads; whether the JSON goes to stdout (--json -)."""
    from ..bench.plot import check_plot_available
    from ..generation.output import check_writable

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
    return to_stdout


def _setup_logging(verbose: bool) -> None:
    setup_logging(verbose)
    if not verbose:  # one "TeaCache enabled" line per run would bury the table
        logging.getLogger("teacli").setLevel(logging.WARNING)


def _report(
    report: Any, console: Any, json_file: Path | None, to_stdout: bool, plot: Path | None, overwrite: bool
) -> None:
    """The tables; the JSON on stdout (--json -) or in its file; the plot."""
    from ..bench.plot import plot_bench, plot_frontier
    from ..bench.report import render_report
    from ..generation.output import save_json

    data = render_report(report, console)
    over_prompts = report.spec.over_prompts
    if to_stdout:
        print_json(data)
    elif json_file is not None:
        save_json(data, json_file, overwrite)
        console.print(f"wrote {json_file}")
    if plot is not None:
        (plot_frontier if over_prompts else plot_bench)(data, plot, overwrite)
        console.print(f"wrote {plot}")


def _methods(against: str | None) -> list[str]:
    """--against as the peers' names (teacli.bench.peers)."""
    from ..bench.peers import parse_against

    try:
        return parse_against(against)
    except ValueError as error:
        raise CLIError(str(error)) from None


def _requests(
    preset: Any, texts: list[str], seed: int, asked: dict, image: Path | None, thresholds: list[float], strict: bool
) -> list[Any]:
    """Request i: prompt i with seed + i, the preset's defaults where nothing was asked; what the pipeline cannot
    take refused and what makes caching useless warned of (refused with --strict), before loading."""
    from ..generation.checks import check_settings, schedule_warning, thresh_warning
    from ..generation.runner import GenerationRequest
    from ..generation.session import check_pipeline_takes, input_image

    check_pipeline_takes(preset, guidance=asked["guidance"], height=asked["height"], width=asked["width"], image=image)
    request = GenerationRequest.from_preset(preset, texts[0], seed=seed, image=input_image(preset, image), **asked)
    warnings = [schedule_warning(request.steps), *(thresh_warning(t, preset) for t in thresholds)]
    check_settings(warnings, strict, RichProgress())
    return [replace(request, prompt=text, seed=seed + index) for index, text in enumerate(texts)]
