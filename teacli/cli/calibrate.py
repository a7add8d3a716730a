"""teacli calibrate: fit TeaCache coefficients on a model and write them as a preset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..calibrate.workflow import BATCH, FORECAST_GAP, MAX_GAP, PLAN_PROMPTS
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
    AllowPickleOpt,
    CompileOpt,
    Device,
    DeviceOpt,
    DType,
    DTypeOpt,
    GuidanceOpt,
    HeightOpt,
    JsonOpt,
    LoraOpt,
    LoraScaleOpt,
    ModelOpt,
    NumPromptsOpt,
    OfflineOpt,
    OverwriteOpt,
    VerboseOpt,
    WidthOpt,
    check_ranges,
    check_seeds,
    check_text,
    load_options,
)
from ._progress import completed_bar, loading

PRESET_SUFFIXES = (".yaml", ".yml")


PromptsOption = Annotated[
    Path | None,
    typer.Option("--prompts", help="Text file, one prompt a line ('#' comments)", show_default="the built-in set"),
]
StepsOption = Annotated[int, typer.Option("--steps", help="Denoising steps per prompt (at least 3)")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the first prompt; prompt i uses seed + i")]
OrderOption = Annotated[int, typer.Option("--order", help="Polynomial order, 1 to 6")]
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
PlanOption = Annotated[
    bool,
    typer.Option(
        "--plan",
        help="Also plan schedules from the final pictures' error: a plan per budget (--budget) at --steps, "
        "costing many generations (see --plan-prompts, --max-gap)",
    ),
]
PlanPromptsOption = Annotated[
    int | None,
    typer.Option(
        "--plan-prompts",
        help="With --plan: captions the plans are measured on (the first N)",
        show_default=str(PLAN_PROMPTS),
    ),
]
MaxGapOption = Annotated[
    int | None,
    typer.Option("--max-gap", help="With --plan: the most steps in a row a plan may skip", show_default=str(MAX_GAP)),
]
ForecastGapOption = Annotated[
    int | None,
    typer.Option(
        "--forecast-gap",
        help="With --plan: the most steps in a row a plan may forecast; 0: none",
        show_default=str(FORECAST_GAP),
    ),
]
BudgetsOption = Annotated[
    str | None,
    typer.Option(
        "--budgets", help="With --plan: computed steps to plan for, e.g. 4-20", show_default="2 to 70% of --steps"
    ),
]
BatchOption = Annotated[
    int | None,
    typer.Option(
        "--batch",
        help="With --plan: captions per pipeline call (more is faster, needs memory)",
        show_default=str(BATCH),
    ),
]


def calibrate(
    model: ModelOpt = None,
    prompts: PromptsOption = None,
    num_prompts: NumPromptsOpt = None,
    steps: StepsOption = 50,
    guidance: GuidanceOpt = None,
    seed: SeedOption = 0,
    order: OrderOption = 4,
    height: HeightOpt = None,
    width: WidthOpt = None,
    negative_prompt: NegativePromptOption = None,
    name: NameOption = None,
    out: OutOption = None,
    overwrite: OverwriteOpt = False,
    plan: PlanOption = False,
    plan_prompts: PlanPromptsOption = None,
    max_gap: MaxGapOption = None,
    forecast_gap: ForecastGapOption = None,
    budgets: BudgetsOption = None,
    batch: BatchOption = None,
    lora: LoraOpt = None,
    lora_scale: LoraScaleOpt = 1.0,
    compile: CompileOpt = False,
    device: DeviceOpt = Device.auto,
    dtype: DTypeOpt = DType.auto,
    allow_pickle: AllowPickleOpt = False,
    offline: OfflineOpt = False,
    json_report: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Fit TeaCache coefficients on a model (uncached runs over prompts) and write a preset with them; with
    --plan, also the schedule per budget whose final pictures are closest to uncached."""
    from ..calibrate.workflow import plan_settings

    check_plan_flags(plan, budgets=budgets, batch=batch, plan_prompts=plan_prompts, max_gap=max_gap,
                     forecast_gap=forecast_gap)  # fmt: skip
    planning = plan_settings(steps, plan_prompts, max_gap, forecast_gap, budgets, batch) if plan else None
    import_libraries()

    from ..batch.prompts import BUILTIN_PROMPTS, read_prompts
    from ..calibrate.coefficients import CalibrationSettings
    from ..calibrate.workflow import CalibrateSpec
    from ..generation.runner import GenerationRequest
    from ..generation.session import check_pipeline_takes, resolve

    # Everything the user typed is checked before the model is loaded, so a bad run writes nothing.
    _check_fit(steps, order)
    check_ranges(steps=steps, num_prompts=num_prompts, height=height, width=width, guidance=guidance)
    check_text("--negative-prompt", negative_prompt)
    if json_report:
        reserve_stdout_for_json("--json")
    if name is not None and not name.strip():
        raise CLIError("--name must not be empty")
    texts = read_prompts(prompts) if prompts is not None else list(BUILTIN_PROMPTS)
    texts = texts[:num_prompts] if num_prompts is not None else texts
    check_seeds(seed, len(texts))
    loading = load_options(allow_pickle, offline, lora, lora_scale, compile)
    setup_logging(verbose)
    preset = resolve(model, offline=offline)
    check_pipeline_takes(preset, guidance=guidance, height=height, width=width, negative_prompt=negative_prompt)
    preset_name = name or preset.name
    out = _preset_file(out, preset_name, overwrite)

    # The settings record what ran: the preset's defaults where the user gave nothing.
    request = GenerationRequest.from_preset(
        preset, "", guidance=guidance, height=height, width=width, negative_prompt=negative_prompt
    )
    settings = CalibrationSettings(
        len(texts), steps, seed, order, request.guidance, request.height, request.width,
        negative_prompt=request.negative_prompt is not None,
    )  # fmt: skip
    spec = CalibrateSpec(
        preset, texts, settings, preset_name, negative_prompt, planning, device.value, dtype.value, loading
    )
    _report(_run(spec), out, overwrite, json_report)


def check_plan_flags(plan: bool, **given: object) -> None:
    """The --plan options go with --plan: refuse the first one given without it, before anything loads."""
    named = [f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None]
    if named and not plan:
        raise CLIError(f"{named[0]} goes with --plan; add --plan or drop it")


def _run(spec: Any) -> Any:
    """calibrate with its progress drawn: a spinner while loading, a bar while fitting and while planning."""
    from ..calibrate.workflow import CalibrateProgress, calibrate

    try:
        return calibrate(spec, CalibrateProgress(loading=loading, bar=completed_bar))
    except KeyboardInterrupt as interrupt:
        interrupted("nothing was written", interrupt)


def _check_fit(steps: int, order: int) -> None:
    from ..calibrate.coefficients import MAX_ORDER, MIN_ORDER, MIN_STEPS

    if steps < MIN_STEPS:
        raise CLIError(f"--steps must be at least {MIN_STEPS} for calibration (each prompt gives steps - 1 pairs)")
    if not MIN_ORDER <= order <= MAX_ORDER:
        raise CLIError(f"--order must be between {MIN_ORDER} and {MAX_ORDER} (4 is the TeaCache default), got {order}")


def _preset_file(out: Path | None, preset_name: str, overwrite: bool) -> Path:
    """--out, or NAME-calibrated.yaml; checked to be a preset file that may be written, before loading."""
    from ..generation.output import check_writable

    out = out if out is not None else Path(preset_name.replace("/", "--") + "-calibrated.yaml")
    if out.suffix.lower() not in PRESET_SUFFIXES:
        raise CLIError(f"--out {out} must end in .yaml or .yml: it is a preset file")
    check_writable(out, overwrite, kind="--out")
    return out


def _report(calibrated, out: Path, overwrite: bool, json_report: bool) -> None:
    """The fit (and the plans) as tables, the preset written, the JSON report with --json, where to use it."""
    from ..calibrate.report import render_plans
    from ..calibrate.workflow import write_preset
    from ..generation.report import render_calibration

    console = ReportConsole(stderr=json_report)  # with --json stdout carries the JSON alone
    render_calibration(calibrated.result, console)
    if calibrated.planned is not None:
        render_plans(calibrated.planned, console)
    write_preset(calibrated.preset, out, overwrite)
    if json_report:
        print_json(calibrated.to_dict(out))
    console.print(f'wrote {out}: use it with `teacli generate --model {out} "..."`', highlight=False)
    name = calibrated.preset.name
    console.print(
        f"or put it in a user preset directory (README, 'User presets') to replace or add '{name}' by name",
        highlight=False,
    )
