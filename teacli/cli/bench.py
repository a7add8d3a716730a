"""teacli bench: speed and quality of several thresholds against the uncached pipeline."""

from __future__ import annotations

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
    parse_coefficients,
    parse_thresholds,
)

BENCH_PROMPT = "a red circle on a blue background"


def bench(
    model: ModelOpt = None,
    thresh: Annotated[str, typer.Option("--thresh", "-t", help="Comma-separated thresholds")] = "0.1,0.2,0.4",
    coefficients: CoefficientsOpt = None,
    steps: StepsOpt = None,
    seed: SeedOpt = 0,
    guidance: GuidanceOpt = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
    prompt: Annotated[str, typer.Option("--prompt", help="Prompt for every run")] = BENCH_PROMPT,
    image: ImageOpt = None,
    runs: Annotated[int, typer.Option("--runs", help="Measured runs per configuration")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", help="Unmeasured rounds before measuring")] = 1,
    compare_baseline: Annotated[
        bool, typer.Option("--compare-baseline", help="Also run without cache: speedup and PSNR against it")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results to this JSON file")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --json if it exists")] = False,
    device: DeviceOpt = Device.auto,
    dtype: DTypeOpt = DType.auto,
    verbose: VerboseOpt = False,
) -> None:
    """Time each threshold (and the uncached baseline), median of --runs, interleaved round-robin."""
    from rich.console import Console

    from ..benchmark import BenchConfig, run_bench
    from ..output import check_writable, save_json
    from ..report import render_bench
    from ..runner import GenerationRequest
    from ._session import check_pipeline_takes, input_image, open_session, resolve, step_progress

    thresholds = parse_thresholds(thresh)
    user_coefficients = parse_coefficients(coefficients)
    check_steps(steps)
    check_positive("--runs", runs)
    check_positive("--height", height)
    check_positive("--width", width)
    if warmup < 0:
        raise CLIError(f"--warmup must be >= 0, got {warmup}")
    if json_out is not None:
        check_writable(json_out, overwrite, kind="--json")
    setup_logging(verbose)
    preset = resolve(model)
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
    configs = ([BenchConfig("baseline", None)] if compare_baseline else []) + [
        BenchConfig(f"teacache@{value:g}", value) for value in thresholds
    ]

    try:
        session = open_session(preset, device, dtype, user_coefficients)
        total = (warmup + runs) * len(configs)
        with step_progress("bench", total) as progress:
            task = progress.add_task("bench", total=total)
            result = run_bench(
                session.pipe,
                session.config,
                request,
                configs,
                runs=runs,
                warmup=warmup,
                on_run=lambda label: progress.update(task, advance=1, description=label),
            )
    except KeyboardInterrupt:
        print_error("interrupted; nothing was written")
        raise typer.Exit(EXIT_INTERRUPTED) from None

    title = (
        f"bench {preset.name}: {request.steps} steps, {runs} runs, warm-up {warmup}, device {session.pipe.device}, "
        f"coefficients: {session.coefficients_source}"
    )
    render_bench(result.rows, result.baseline, title, Console())
    if json_out is not None:
        data = result.to_dict(preset.name, request.steps, str(session.pipe.device))
        data["coefficients_source"] = session.coefficients_source
        if user_coefficients is not None:
            data["coefficients"] = list(user_coefficients)
        save_json(data, json_out)
        Console().print(f"wrote {json_out}")
