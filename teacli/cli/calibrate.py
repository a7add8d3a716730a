"""teacli calibrate: fit TeaCache coefficients on a model and write them as a preset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ..catalog import Preset
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
    """Fit TeaCache coefficients on a model (uncached runs over prompts) and write a preset with them."""
    import_libraries()

    from ..calibration import MAX_ORDER, MIN_ORDER, MIN_STEPS, CalibrationSettings, run_calibration
    from ..catalog import preset_to_dict
    from ..output import check_writable
    from ..prompts import BUILTIN_PROMPTS, read_prompts
    from ..report import render_calibration
    from ..runner import GenerationRequest
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
    except KeyboardInterrupt as interrupt:
        print_error("interrupted; nothing was written")
        raise typer.Exit(interrupt_exit_code(interrupt)) from None

    console = ReportConsole(stderr=json_report)  # with --json stdout carries the JSON alone
    render_calibration(result, console)
    calibrated = result.preset(preset, preset_name)
    write_preset(calibrated, out, overwrite)
    if json_report:
        print_json({"preset": preset_to_dict(calibrated), "file": str(out), "warnings": result.warnings()})
    console.print(f'wrote {out}: use it with `teacli generate --model {out} "..."`', highlight=False)
    console.print(
        f"or put it in a user preset directory (README, 'User presets') to replace or add '{preset_name}' by name",
        highlight=False,
    )


def write_preset(preset: Preset, path: Path, overwrite: bool = False) -> None:
    """The preset as YAML, checked to read back as the same preset before it replaces anything."""
    import yaml

    from ..catalog import parse_preset, preset_to_dict
    from ..output import write_atomic

    data = preset_to_dict(preset)
    header = f"# Written by teacli calibrate on {preset.calibration.get('date', '')}; see the calibration block.\n"
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=120)
    if replace(parse_preset(yaml.safe_load(text), str(path)), source="") != replace(preset, source=""):
        raise RuntimeError("the calibrated preset does not read back as written; please report this")
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), overwrite)
