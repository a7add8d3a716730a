"""teacli bench: TeaCache beside vanilla and the other caches, on the user's own model and machine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

import teacli.cli._options as opt

from ..batch.prompts import read_prompts
from ..bench.options import check_outputs, check_prompt_sources, parse_at_calls, parse_quantizations, split_budgets
from ..generation.policy import parse_coefficients, parse_thresholds
from ..generation.progress import RichProgress
from ..models.library_logs import log_to_console
from ..settings import check_given
from ..signals import import_libraries
from ._app import CLIError, ReportConsole, interrupted, print_json, reserve_stdout_for_json, stderr

BENCH_PROMPT = "a red circle on a blue background"
THRESHOLDS = "0.1,0.2,0.4,0.6"
SWEEP_THRESHOLDS = "0.05,0.1,0.2,0.3,0.5,0.8"  # with --sweep: from about 40 to 10 computed calls of 56 on teacli-shapes


THRESH_HELP = "Comma-separated thresholds"
AGAINST_HELP = "Other caches beside TeaCache, comma-separated: fbcache, magcache, taylorseer, dbcache, or none"
BUDGET_HELP = (
    "Comma-separated budgets (computed steps, e.g. 6,8,10, or speedups, e.g. 3x): a teacache-plan row each "
    "(the preset's calibrated plan; teacache-uniform where it has none)"
)
BUDGET_SHOWN = "with --sweep, every budget the preset has a plan for, up to 60% of the steps"
POLICY_HELP = "For --budget rows: auto (a calibrated plan, else uniform), plan or uniform"
PROMPTS_HELP = (
    "Text file, one prompt a line ('#' comments): every configuration runs on every prompt, prompt i with seed "
    "--seed + i; rows give the mean and spread over prompts"
)
SWEEP_HELP = "Sweep every cache across 5-6 settings, few to many computed calls, to draw each curve"
AT_CALLS_HELP = (
    "Compare every cache at these computed calls per picture, e.g. 12,16,20,24,32: PSNR and SSIM interpolated "
    "along each one's curve (the frontier table and JSON key; implies --sweep)"
)
WARMUP_HELP = "Unmeasured rounds before measuring (with --prompts: on the first prompt)"
ISOLATE_HELP = "Run each configuration in a process of its own instead of interleaved"
JSON_HELP = "Also write the results to this JSON file; - prints them on stdout"
PLOT_HELP = "Also draw speedup against PSNR to this PNG (needs teacli\\[plot])"  # escaped: Rich reads [plot] as markup

ThreshOption = Annotated[
    str | None,
    typer.Option("--thresh", "-t", help=THRESH_HELP, show_default=f"{THRESHOLDS}; with --sweep {SWEEP_THRESHOLDS}"),
]
PromptOption = Annotated[str | None, typer.Option("--prompt", help="Prompt for every run", show_default=BENCH_PROMPT)]
RunsOption = Annotated[
    int | None,
    typer.Option(
        "--runs", help="Measured runs per configuration (and prompt)", show_default="3; 1 with --prompts or --at-calls"
    ),
]
CompareBaselineOption = Annotated[
    bool, typer.Option("--compare-baseline", hidden=True, help="Kept for scripts: vanilla always runs now")
]


@opt.setting_options(after="cache_device", exclude=("num_images",))
@opt.with_options(opt.LOADING, after="overwrite")
@opt.with_options(opt.CACHING, after="coefficients")
def bench(
    model: opt.ModelOpt = None,
    thresh: ThreshOption = None,
    against: Annotated[str | None, typer.Option("--against", help=AGAINST_HELP, show_default="all that apply")] = None,
    budget: Annotated[str | None, typer.Option("--budget", "-b", help=BUDGET_HELP, show_default=BUDGET_SHOWN)] = None,
    policy: Annotated[str, typer.Option("--policy", help=POLICY_HELP)] = "auto",
    coefficients: opt.CoefficientsOpt = None,
    prompt: PromptOption = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help=PROMPTS_HELP)] = None,
    num_prompts: opt.NumPromptsOpt = None,
    sweep: Annotated[bool, typer.Option("--sweep", help=SWEEP_HELP)] = False,
    at_calls: Annotated[str | None, typer.Option("--at-calls", help=AT_CALLS_HELP)] = None,
    image: opt.ImageOpt = None,
    runs: RunsOption = None,
    warmup: Annotated[int, typer.Option("--warmup", help=WARMUP_HELP)] = 1,
    isolate: Annotated[bool, typer.Option("--isolate", help=ISOLATE_HELP)] = False,
    compare_baseline: CompareBaselineOption = False,
    json_out: Annotated[Path | None, typer.Option("--json", help=JSON_HELP)] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help=PLOT_HELP)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --json / --plot if they exist")] = False,
    strict: opt.StrictOpt = False,
    verbose: opt.VerboseOpt = False,
    **settings: Any,  # the generation settings, the loading and the cache options (opt.setting_options, with_options)
) -> None:
    """Vanilla, TeaCache (threshold 0 and each --thresh) and the other caches, measured alike: median of
    --runs, interleaved round-robin; speedup, ideal speedup, efficiency, PSNR, SSIM and peak memory.
    With --prompts (or --at-calls) every configuration runs on every prompt, and --at-calls compares the
    caches at equal computed calls."""
    at_calls_budgets = parse_at_calls(at_calls)
    over_prompts = prompts is not None or at_calls_budgets is not None
    sweep = sweep or at_calls_budgets is not None
    thresholds = parse_thresholds(thresh if thresh is not None else SWEEP_THRESHOLDS if sweep else THRESHOLDS)
    budget_texts = split_budgets(budget, policy)
    user_coefficients = parse_coefficients(coefficients)
    seed, loading_given = settings.pop("seed"), opt.taken(settings, opt.LOADING)
    caching_given = opt.taken(settings, opt.CACHING)
    device, dtype = loading_given.pop("device"), loading_given.pop("dtype")
    check_given(settings, CLIError)
    opt.check_ranges(runs=runs, warmup=warmup, seed=seed, num_prompts=num_prompts)
    opt.check_text("--negative-prompt", settings["negative_prompt"])
    opt.check_text("--prompt", prompt)
    check_prompt_sources(prompt, prompts, num_prompts, isolate and over_prompts)
    texts = [BENCH_PROMPT if prompt is None else prompt] if prompts is None else read_prompts(prompts)[:num_prompts]
    opt.check_seeds(seed, len(texts))
    to_stdout = json_out is not None and str(json_out) == "-"
    if to_stdout:
        reserve_stdout_for_json("--json -")
    check_outputs(None if to_stdout else json_out, plot, overwrite)
    import_libraries()
    from ..bench.peers import parse_against
    from ..bench.suite import bench_spec
    from ..generation.caching import USER_COEFFICIENTS
    from ..generation.preparation import CacheOptions, load_options

    methods = parse_against(against)
    quantizations = parse_quantizations(loading_given.pop("quantize"))  # bench takes several
    loading = load_options(**loading_given, quantize=quantizations[0] if len(quantizations) == 1 else None)
    caching = CacheOptions(**caching_given)
    log_to_console(stderr, verbose)
    if not verbose:  # one "TeaCache enabled" line per run would bury the table
        logging.getLogger("teacli").setLevel(logging.WARNING)
    spec = bench_spec(
        model, texts, thresholds, seed=seed, settings=settings,
        image=image, methods=methods, budgets=budget_texts, policy=policy, at_calls=at_calls_budgets,
        over_prompts=over_prompts, sweep=sweep, runs=runs, strict=strict, progress=RichProgress(stderr), warmup=warmup,
        isolate=isolate, device=device, dtype=dtype, coefficients=user_coefficients,
        coefficients_source=USER_COEFFICIENTS, load=loading, cache=caching,
        prompts_file=str(prompts) if prompts is not None else None, quantizations=quantizations,
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
        rich = RichProgress(stderr)
        return run_benchmark(spec, BenchProgress(rich.loading_model, rich.runs, skipping))
    except KeyboardInterrupt as interrupt:
        interrupted("nothing was written", interrupt)


def _report(
    report: Any, console: Any, json_file: Path | None, to_stdout: bool, plot: Path | None, overwrite: bool
) -> None:
    """The tables; the JSON on stdout (--json -) or in its file; the plot."""
    from ..bench.report import render_report, save_report

    data = render_report(report, console)
    if to_stdout:
        print_json(data)
    save_report(report, data, json_file, plot, overwrite, console)
