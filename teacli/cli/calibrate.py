"""teacli calibrate: fit TeaCache coefficients on a model and write them as a preset."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ..models.catalog import Preset
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
    CompileOpt,
    Device,
    DeviceOpt,
    DType,
    DTypeOpt,
    GuidanceOpt,
    HeightOpt,
    LoraOpt,
    LoraScaleOpt,
    ModelOpt,
    OfflineOpt,
    VerboseOpt,
    WidthOpt,
    check_ranges,
    check_seeds,
    check_text,
    load_options,
)

PRESET_SUFFIXES = (".yaml", ".yml")
# --plan's defaults: gaps longer than 12 steps never won at 28 steps; forecasts pay over short gaps only;
# 8 captions made the plans measured in docs/benchmarks.md; 1 caption per call fits any model's memory.
MAX_GAP, FORECAST_GAP, PLAN_PROMPTS, BATCH = 12, 4, 8, 1


def calibrate(
    model: ModelOpt = None,
    prompts: Annotated[
        Path | None,
        typer.Option("--prompts", help="Text file, one prompt a line ('#' comments) [default: the built-in set]"),
    ] = None,
    num_prompts: Annotated[
        int | None, typer.Option("--num-prompts", help="Use the first N prompts [default: all]")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps per prompt (at least 3)")] = 50,
    guidance: GuidanceOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first prompt; prompt i uses seed + i")] = 0,
    order: Annotated[int, typer.Option("--order", help="Polynomial order, 1 to 6")] = 4,
    height: HeightOpt = None,
    width: WidthOpt = None,
    negative_prompt: Annotated[
        str | None,
        typer.Option("--negative-prompt", help="Also record the uncond branch of true-CFG pipelines (Qwen-Image)"),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Name of the written preset [default: the model's preset name]")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Preset file to write [default: NAME-calibrated.yaml]")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists")] = False,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan",
            help="Also plan schedules from the final pictures' error: a plan per budget (--budget) at --steps, "
            "costing many generations (see --plan-prompts, --max-gap)",
        ),
    ] = False,
    plan_prompts: Annotated[
        int | None,
        typer.Option(
            "--plan-prompts",
            help=f"With --plan: captions the plans are measured on (the first N) [default: {PLAN_PROMPTS}]",
        ),
    ] = None,
    max_gap: Annotated[
        int | None,
        typer.Option("--max-gap", help=f"With --plan: the most steps in a row a plan may skip [default: {MAX_GAP}]"),
    ] = None,
    forecast_gap: Annotated[
        int | None,
        typer.Option(
            "--forecast-gap",
            help=f"With --plan: the most steps in a row a plan may forecast; 0: none [default: {FORECAST_GAP}]",
        ),
    ] = None,
    budgets: Annotated[
        str | None,
        typer.Option(
            "--budgets", help="With --plan: computed steps to plan for, e.g. 4-20 [default: 2 to 70% of --steps]"
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch",
            help=f"With --plan: captions per pipeline call (more is faster, needs memory) [default: {BATCH}]",
        ),
    ] = None,
    lora: LoraOpt = None,
    lora_scale: LoraScaleOpt = 1.0,
    compile: CompileOpt = False,
    device: DeviceOpt = Device.auto,
    dtype: DTypeOpt = DType.auto,
    allow_pickle: AllowPickleOpt = False,
    offline: OfflineOpt = False,
    json_report: Annotated[
        bool, typer.Option("--json", help="Print the fit and the written preset as JSON on stdout (tables to stderr)")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Fit TeaCache coefficients on a model (uncached runs over prompts) and write a preset with them; with
    --plan, also the schedule per budget whose final pictures are closest to uncached."""
    plan_budgets = check_plan_options(plan, steps, plan_prompts, max_gap, forecast_gap, budgets, batch)
    max_gap = min(MAX_GAP, steps - 2) if max_gap is None else max_gap
    forecast_gap = min(FORECAST_GAP, steps - 2) if forecast_gap is None else forecast_gap
    plan_prompts = PLAN_PROMPTS if plan_prompts is None else plan_prompts
    batch = BATCH if batch is None else batch
    import_libraries()

    from ..batch.prompts import BUILTIN_PROMPTS, read_prompts
    from ..calibrate.coefficients import MAX_ORDER, MIN_ORDER, MIN_STEPS, CalibrationSettings, run_calibration
    from ..generation.output import check_writable
    from ..generation.report import render_calibration
    from ..generation.runner import GenerationRequest
    from ..models.catalog import preset_to_dict
    from ._session import check_pipeline_takes, open_session, resolve, step_progress

    # Everything the user typed is checked before the model is loaded, so a bad run writes nothing.
    if steps < MIN_STEPS:
        raise CLIError(f"--steps must be at least {MIN_STEPS} for calibration (each prompt gives steps - 1 pairs)")
    if not MIN_ORDER <= order <= MAX_ORDER:
        raise CLIError(f"--order must be between {MIN_ORDER} and {MAX_ORDER} (4 is the TeaCache default), got {order}")
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
    out = out if out is not None else Path(preset_name.replace("/", "--") + "-calibrated.yaml")
    if out.suffix.lower() not in PRESET_SUFFIXES:
        raise CLIError(f"--out {out} must end in .yaml or .yml: it is a preset file")
    check_writable(out, overwrite, kind="--out")

    # The settings record what ran: the preset's defaults where the user gave nothing.
    request = GenerationRequest.from_preset(
        preset, "", guidance=guidance, height=height, width=width, negative_prompt=negative_prompt
    )
    settings = CalibrationSettings(
        prompts=len(texts),
        steps=steps,
        seed=seed,
        order=order,
        guidance=request.guidance,
        height=request.height,
        width=request.width,
        negative_prompt=request.negative_prompt is not None,
    )
    try:
        session = open_session(preset, device, dtype, load=loading)
        total = len(texts) * steps
        with step_progress("calibrating", total) as progress:
            task = progress.add_task("calibrating", total=total)

            def on_step(index: int, step: int) -> None:
                progress.update(
                    task, completed=index * steps + step + 1, description=f"prompt {index + 1}/{len(texts)}"
                )

            result = run_calibration(session.pipe, preset, texts, settings, negative_prompt, on_step)
        planned = None
        if plan:
            planned = calibrate_plans(
                session.pipe, preset, texts[:plan_prompts], request, steps, seed, max_gap, forecast_gap,
                plan_budgets, batch,
            )  # fmt: skip
    except KeyboardInterrupt as interrupt:
        print_error("interrupted; nothing was written")
        raise typer.Exit(interrupt_exit_code(interrupt)) from None

    console = ReportConsole(stderr=json_report)  # with --json stdout carries the JSON alone
    render_calibration(result, console)
    calibrated = result.preset(preset, preset_name)
    if planned is not None:
        calibrated = planned.apply(replace(calibrated, plans=preset.plans, budget=preset.budget))
        render_plans(planned, console)
    write_preset(calibrated, out, overwrite)
    if json_report:
        report = {"preset": preset_to_dict(calibrated), "file": str(out), "warnings": result.warnings()}
        if planned is not None:
            report["plan_costs"] = {"steps": planned.steps, **planned.costs.to_dict()}
        print_json(report)
    console.print(f'wrote {out}: use it with `teacli generate --model {out} "..."`', highlight=False)
    console.print(
        f"or put it in a user preset directory (README, 'User presets') to replace or add '{preset_name}' by name",
        highlight=False,
    )


def check_plan_options(
    plan: bool,
    steps: int,
    prompts: int | None,
    max_gap: int | None,
    forecast_gap: int | None,
    budgets: str | None,
    batch: int | None,
) -> list[int]:
    """The --plan options (None where not given) checked before anything loads; the budgets to plan for."""
    if not plan:
        options = {"--budgets": budgets, "--batch": batch, "--plan-prompts": prompts, "--max-gap": max_gap}
        given = [name for name, value in {**options, "--forecast-gap": forecast_gap}.items() if value is not None]
        if given:
            raise CLIError(f"{given[0]} goes with --plan; add --plan or drop it")
        return []
    if prompts is not None and not 1 <= prompts <= 1000:
        raise CLIError(f"--plan-prompts must be between 1 and 1000, got {prompts}")
    if batch is not None and not 1 <= batch <= 64:
        raise CLIError(f"--batch must be between 1 and 64, got {batch}")
    if max_gap is not None and not 1 <= max_gap <= steps - 2:
        raise CLIError(f"--max-gap must be between 1 and {steps - 2} at {steps} steps, got {max_gap}")
    if forecast_gap is not None and not 0 <= forecast_gap <= steps - 2:
        raise CLIError(f"--forecast-gap must be between 0 and {steps - 2} at {steps} steps, got {forecast_gap}")
    return parse_budgets(budgets, steps)


def parse_budgets(text: str | None, steps: int) -> list[int]:
    """--budgets as a sorted list of computed steps: '4-20', '6,8,10' or both mixed; default 2 to 70% of steps."""
    if text is None:
        return list(range(2, max(3, round(0.7 * steps)) + 1))
    values: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise CLIError(f"--budgets takes computed steps like 4-20 or 6,8,10, got {text[:40]!r}") from None
        if not 2 <= first <= last <= steps:
            raise CLIError(f"--budgets: {part.strip()} is not within 2-{steps} (the computed steps of {steps})")
        values.update(range(first, last + 1))
    return sorted(values)


def calibrate_plans(pipe, preset, texts, request, steps, seed, max_gap, forecast_gap, budgets, batch):
    """run_plan_calibration on the first captions (caption i with seed + i) behind a progress bar."""
    from ..calibrate.plans import planned_runs, run_plan_calibration
    from ..models.loading import teacache_configs
    from ._session import step_progress

    requests = [replace(request, prompt=text, steps=steps, seed=seed + index) for index, text in enumerate(texts)]
    logger = logging.getLogger("teacli")
    if logger.level < logging.WARNING and not logger.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)  # one "TeaCache enabled" line per run would bury the progress
    total = planned_runs(steps, len(requests), batch, max_gap, forecast_gap, budgets)
    with step_progress("planning", total) as progress:
        task = progress.add_task("planning schedules", total=total)
        return run_plan_calibration(
            pipe,
            requests,
            lambda plan: teacache_configs(preset, plan=plan),
            max_gap=max_gap,
            forecast_gap=forecast_gap,
            budgets=budgets,
            batch=batch,
            on_run=lambda: progress.advance(task),
        )


def render_plans(planned, console) -> None:
    """The chosen plan per budget and what the calibration cost."""
    from rich.table import Table

    from ..calibrate.plans import psnr_of

    table = Table(
        title=f"planned schedules at {planned.steps} steps ({planned.captions} captions)",
        caption="C computed, f forecast, . reused; PSNR of the final pictures against uncached, calibration captions",
    )
    for column in ("budget", "PSNR dB", "schedule"):
        table.add_column(column, justify="right" if column != "schedule" else "left", no_wrap=column == "schedule")
    for budget, chosen in sorted(planned.chosen.items()):
        table.add_row(str(budget), f"{psnr_of(chosen.error):.1f}", chosen.plan.timeline())
    console.print(table)
    console.print(
        f"planning cost {planned.calls} computed transformer calls per caption and CFG branch "
        f"({planned.calls / planned.steps:.0f} uncached generations' worth)",
        highlight=False,
    )


def write_preset(preset: Preset, path: Path, overwrite: bool = False) -> None:
    """The preset as YAML, checked to read back as the same preset before it replaces anything."""
    import yaml

    from ..generation.output import write_atomic
    from ..models.catalog import parse_preset, preset_to_dict

    data = preset_to_dict(preset)
    header = f"# Written by teacli calibrate on {preset.calibration.get('date', '')}; see the calibration block.\n"
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=120)
    if replace(parse_preset(yaml.safe_load(text), str(path)), source="") != replace(preset, source=""):
        raise RuntimeError("the calibrated preset does not read back as written; please report this")
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), overwrite)
