"""teacli generate: one image with TeaCache, and a report of what it skipped; or one output per prompt of a
prompts file (--prompts). Under torchrun or accelerate launch only rank 0 speaks; the others exit alike."""

from __future__ import annotations

import logging
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import TeacliError
from ._app import (
    EXIT_USER_ERROR,
    CLIError,
    ReportConsole,
    import_libraries,
    interrupt_exit_code,
    interrupted,
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
    FpsOpt,
    FramesOpt,
    GuidanceOpt,
    HeightOpt,
    ImageOpt,
    JsonOpt,
    LoraOpt,
    LoraScaleOpt,
    MaxCachedInRowOpt,
    ModelOpt,
    NegativePromptOpt,
    NumImagesOpt,
    OfflineOpt,
    OverwriteOpt,
    PolicyOpt,
    RetStepsOpt,
    SeedOpt,
    StartOpt,
    StepsOpt,
    StrictOpt,
    TrueCfgOpt,
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
from ._progress import RichProgress


class UsageError(CLIError):
    """A command line that cannot be run as typed: exit code 2, as for a missing argument."""

    exit_code = 2


# The options only generate has.
PromptArg = Annotated[str | None, typer.Argument(help="What to draw (or give --prompts FILE)", show_default=False)]
PromptsOpt = Annotated[
    Path | None,
    typer.Option(
        "--prompts",
        help="Make one output per prompt of FILE: one prompt a line, or JSONL with per-prompt seed and options; "
        "resumable, and split between processes under torchrun or accelerate launch",
    ),
]
OutDirOpt = Annotated[
    Path | None,
    typer.Option("--out-dir", help="With --prompts: where the outputs go", show_default="the current folder"),
]
ManifestOpt = Annotated[
    Path | None,
    typer.Option(
        "--manifest", help="With --prompts: the JSONL record of what was made", show_default="OUT_DIR/manifest.jsonl"
    ),
]
ThreshOpt = Annotated[
    float | None,
    typer.Option("--thresh", "-t", help="TeaCache threshold; 0 computes every step", show_default="the preset's"),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="Output file", show_default="teacli-NNNN.png/.mp4/.wav by what the model makes, first free"
    ),
]
CompareBaselineOpt = Annotated[
    bool, typer.Option("--compare-baseline", help="Also run without cache: measured speedup and PSNR")
]


def generate(
    prompt: PromptArg = None,
    prompts: PromptsOpt = None,
    out_dir: OutDirOpt = None,
    manifest: ManifestOpt = None,
    model: ModelOpt = None,
    thresh: ThreshOpt = None,
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
    negative_prompt: NegativePromptOpt = None,
    true_cfg: TrueCfgOpt = None,
    frames: FramesOpt = None,
    fps: FpsOpt = None,
    num_images: NumImagesOpt = 1,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    lora: LoraOpt = None,
    lora_scale: LoraScaleOpt = 1.0,
    compile: CompileOpt = False,
    device: DeviceOpt = Device.auto,
    dtype: DTypeOpt = DType.auto,
    allow_pickle: AllowPickleOpt = False,
    offline: OfflineOpt = False,
    compare_baseline: CompareBaselineOpt = False,
    json_report: JsonOpt = False,
    strict: StrictOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Generate an image, video or sound with TeaCache and report calls computed vs cached."""
    given = dict(locals())  # every option by name, as the library's specs name their fields
    _check_command_line(given)
    if json_report:
        reserve_stdout_for_json("--json")
    import_libraries()

    from ..batch.prepare import PromptsSpec
    from ..generation.generate import GenerationSpec

    given.update(
        coefficients=parse_coefficients(coefficients),
        load=load_options(allow_pickle, offline, lora, lora_scale, compile),
        cache=cache_options(start, end, ret_steps, max_cached_in_row, cache_device),
        device=device.value,
        dtype=dtype.value,
    )
    setup_logging(verbose)
    if prompts is not None:
        _generate_prompts(_spec(PromptsSpec, given), json_report)
    else:
        _generate_one(_spec(GenerationSpec, given), json_report)


def _spec(spec_class: Any, given: dict[str, Any]) -> Any:
    """A library spec from the command line's values of its fields."""
    return spec_class(**{field.name: given[field.name] for field in fields(spec_class) if field.name in given})


def _check_command_line(given: dict[str, Any]) -> None:
    """Everything the user typed is checked before anything is imported or loaded."""
    prompt, prompts = given["prompt"], given["prompts"]
    if (prompt is None) == (prompts is None):
        raise UsageError(
            "give a PROMPT or --prompts FILE, not both"
            if prompts is not None
            else "give a PROMPT, or --prompts FILE (one prompt a line, or JSONL) for many"
        )
    if prompts is None and (given["out_dir"] is not None or given["manifest"] is not None):
        raise CLIError("--out-dir and --manifest go with --prompts; for one prompt use --out")
    if prompts is not None:
        if given["out"] is not None:
            raise CLIError("--out names one file; with --prompts the outputs go to --out-dir, one per prompt")
        if given["num_images"] != 1:
            raise CLIError("--num-images goes with one PROMPT; with --prompts, repeat a line (each gets its own seed)")
        if given["compare_baseline"]:
            raise CLIError("--compare-baseline measures one PROMPT; drop it with --prompts (teacli bench compares)")
    if given["thresh"] is not None:
        check_thresh(given["thresh"])
    check_policy(given["policy"], given["budget"])
    parse_coefficients(given["coefficients"])
    ranged = ("steps", "height", "width", "frames", "num_images", "fps", "guidance", "true_cfg")
    check_ranges(**{name: given[name] for name in ranged})
    check_seeds(given["seed"], given["num_images"])
    check_text("the prompt", prompt)
    check_text("--negative-prompt", given["negative_prompt"])


def _generate_one(spec: Any, json_report: bool) -> None:
    """One prompt: the library's generate, its progress on stderr, then the report."""
    from ..generation.generate import prepare_generation, run_generation
    from ..generation.report import render_generation

    progress = RichProgress()
    prepared = prepare_generation(spec, progress)
    try:
        summary = run_generation(prepared, progress)
    except KeyboardInterrupt as interrupt:
        # A Ctrl-C during the final renames is held until the files are in place: say what is on disk.
        written = prepared.written()
        interrupted(f"wrote only {', '.join(map(str, written))}" if written else "nothing was written", interrupt)
    _render(render_generation, summary, json_report)


def _generate_prompts(spec: Any, json_report: bool) -> None:
    """One output per prompt of spec.prompts (teacli.batch), then the report; only rank 0 speaks."""
    from ..batch.distributed import launch_from_env
    from ..batch.prepare import prepare_prompts
    from ..batch.report import render_prompts
    from ..batch.run import PromptsFailed, run_prompts
    from ..generation.progress import Quiet

    launch = launch_from_env()
    if not launch.is_main:  # the others say nothing but their own errors
        logging.getLogger("teacli").setLevel(logging.ERROR)
        warnings.simplefilter("ignore")
    progress = RichProgress() if launch.is_main else Quiet()
    try:
        prepared = prepare_prompts(spec, launch, progress)
    except TeacliError:
        _quiet_unless_main(launch)  # every rank sees the same arguments and files: rank 0 says it
        raise
    try:
        summary = run_prompts(prepared, progress)
    except PromptsFailed as failure:
        if failure.summary is not None:
            _render(render_prompts, failure.summary, json_report)
        _quiet_unless_main(launch)
        raise
    except KeyboardInterrupt as interrupt:
        if not launch.is_main:
            raise typer.Exit(interrupt_exit_code(interrupt)) from None
        where = prepared.manifest if not launch.distributed else f"{prepared.manifest} and its part files"
        interrupted(
            f"{len(prepared.made)} output(s) of this process are recorded in {where}; "
            "run the same command again to make the rest",
            interrupt,
        )
    if summary is not None:
        _render(render_prompts, summary, json_report)


def _quiet_unless_main(launch: Any) -> None:
    if not launch.is_main:
        raise typer.Exit(EXIT_USER_ERROR) from None


def _render(render: Any, summary: Any, json_report: bool) -> None:
    """The report's tables on stdout, or with --json on stderr and the JSON on stdout."""
    render(summary, ReportConsole(stderr=json_report))
    if json_report:
        print_json(summary.to_dict())
