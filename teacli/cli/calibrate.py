"""teacli calibrate: fit TeaCache coefficients on a model and write them as a preset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

import teacli.cli._options as opt

from ..calibrate.options import (
    BATCH,
    FORECAST_GAP,
    MAX_GAP,
    PLAN_PROMPTS,
    check_fit,
    check_plan_options,
    plan_settings,
    preset_file,
)
from ..generation.progress import RichProgress
from ..models.library_logs import log_to_console
from ..signals import import_libraries
from ._app import ReportConsole, interrupted, print_json, reserve_stdout_for_json, stderr

PLAN_HELP = (
    "Also plan schedules from the final pictures' error: a plan per budget (--budget) at --steps, costing many "
    "generations (see --plan-prompts, --max-gap)"
)
PLAN_PROMPTS_HELP = "With --plan: captions the plans are measured on (the first N)"
FORECAST_GAP_HELP = "With --plan: the most steps in a row a plan may forecast; 0: none"
BATCH_HELP = "With --plan: captions per pipeline call (more is faster, needs memory)"

PromptsOption = Annotated[
    Path | None,
    typer.Option("--prompts", help="Text file, one prompt a line ('#' comments)", show_default="the built-in set"),
]
NegativePromptOption = Annotated[
    str | None,
    typer.Option("--negative-prompt", help="Also record the uncond branch of true-CFG pipelines (Qwen-Image)"),
]
NameOption = Annotated[
    str | None, typer.Option("--name", help="Name of the written preset", show_default="the model's preset name")
]
OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Preset file to write", show_default="NAME-calibrated.yaml")
]
PlanPromptsOption = Annotated[
    int | None, typer.Option("--plan-prompts", help=PLAN_PROMPTS_HELP, show_default=str(PLAN_PROMPTS))
]
MaxGapOption = Annotated[
    int | None,
    typer.Option("--max-gap", help="With --plan: the most steps in a row a plan may skip", show_default=str(MAX_GAP)),
]
ForecastGapOption = Annotated[
    int | None, typer.Option("--forecast-gap", help=FORECAST_GAP_HELP, show_default=str(FORECAST_GAP))
]
BudgetsOption = Annotated[
    str | None,
    typer.Option(
        "--budgets", help="With --plan: computed steps to plan for, e.g. 4-20", show_default="2 to 70% of --steps"
    ),
]


@opt.with_options(opt.LOADING, after="batch")
def calibrate(
    model: opt.ModelOpt = None,
    prompts: PromptsOption = None,
    num_prompts: opt.NumPromptsOpt = None,
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps per prompt (at least 3)")] = 50,
    guidance: opt.GuidanceOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first prompt; prompt i uses seed + i")] = 0,
    order: Annotated[int, typer.Option("--order", help="Polynomial order, 1 to 6")] = 4,
    height: opt.HeightOpt = None,
    width: opt.WidthOpt = None,
    negative_prompt: NegativePromptOption = None,
    name: NameOption = None,
    out: OutOption = None,
    overwrite: opt.OverwriteOpt = False,
    plan: Annotated[bool, typer.Option("--plan", help=PLAN_HELP)] = False,
    plan_prompts: PlanPromptsOption = None,
    max_gap: MaxGapOption = None,
    forecast_gap: ForecastGapOption = None,
    budgets: BudgetsOption = None,
    batch: Annotated[int | None, typer.Option("--batch", help=BATCH_HELP, show_default=str(BATCH))] = None,
    json_report: opt.JsonOpt = False,
    verbose: opt.VerboseOpt = False,
    **loading_given: Any,  # the loading options (opt.with_options)
) -> None:
    """Fit TeaCache coefficients on a model (uncached runs over prompts) and write a preset with them; with
    --plan, also the schedule per budget whose final pictures are closest to uncached."""
    check_plan_options(plan, budgets=budgets, batch=batch, plan_prompts=plan_prompts, max_gap=max_gap,
                     forecast_gap=forecast_gap)  # fmt: skip
    planning = plan_settings(steps, plan_prompts, max_gap, forecast_gap, budgets, batch) if plan else None
    import_libraries()

    from ..batch.prompts import BUILTIN_PROMPTS, read_prompts
    from ..calibrate.workflow import calibrate_spec
    from ..generation.preparation import load_options

    # Everything the user typed is checked before the model is loaded, so a bad run writes nothing.
    check_fit(steps, order)
    opt.check_ranges(steps=steps, num_prompts=num_prompts, height=height, width=width, guidance=guidance)
    opt.check_text("--negative-prompt", negative_prompt)
    if json_report:
        reserve_stdout_for_json("--json")
    texts = (read_prompts(prompts) if prompts is not None else list(BUILTIN_PROMPTS))[:num_prompts]
    opt.check_seeds(seed, len(texts))
    device, dtype = loading_given.pop("device"), loading_given.pop("dtype")
    loading = load_options(**loading_given)
    log_to_console(stderr, verbose)
    spec = calibrate_spec(
        model, texts, steps=steps, seed=seed, order=order, guidance=guidance, height=height, width=width,
        negative_prompt=negative_prompt, name=name, plan=planning, device=device, dtype=dtype,
        load=loading,
    )  # fmt: skip
    out = preset_file(out, spec.name, overwrite)  # checked before loading, so a bad run writes nothing
    _report(_run(spec), out, overwrite, json_report)


def _run(spec: Any) -> Any:
    """calibrate with its progress drawn: a spinner while loading, a bar while fitting and while planning."""
    from ..calibrate.workflow import CalibrateProgress, calibrate

    try:
        rich = RichProgress(stderr)
        return calibrate(spec, CalibrateProgress(rich.loading_model, rich.completed))
    except KeyboardInterrupt as interrupt:
        interrupted("nothing was written", interrupt)


def _report(calibrated: Any, out: Path, overwrite: bool, json_report: bool) -> None:
    """The fit (and the plans) as tables, the preset written, the JSON report with --json, where to use it."""
    from ..calibrate.report import render_calibrated, render_written
    from ..calibrate.workflow import write_preset

    console = ReportConsole(stderr=json_report)  # with --json stdout carries the JSON alone
    render_calibrated(calibrated, console)
    write_preset(calibrated.preset, out, overwrite)
    if json_report:
        print_json(calibrated.to_dict(out))
    render_written(calibrated.preset, out, console)
