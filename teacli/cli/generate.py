"""teacli generate: one image with TeaCache, and a report of what it skipped; or one output per prompt of a
prompts file (--prompts). Under torchrun or accelerate launch only rank 0 speaks; the others exit alike."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

import teacli.cli._options as opt

from ..errors import TeacliError
from ..generation.options import check_generate_options, spec_from_options
from ..generation.progress import RichProgress
from ..models.library_logs import log_to_console
from ..signals import exit_code as interrupt_exit_code
from ..signals import import_libraries
from ._app import EXIT_USER_ERROR, interrupted, render_report, reserve_stdout_for_json, stderr

# The options only generate has.
PromptArg = Annotated[str | None, typer.Argument(help="What to draw (or give --prompts FILE)", show_default=False)]
PROMPTS_HELP = (
    "Make one output per prompt of FILE: one prompt a line, or JSONL with per-prompt seed and options; resumable, "
    "and split between processes under torchrun or accelerate launch"
)
OUT_SHOWN = "teacli-NNNN.png/.mp4/.wav by what the model makes, first free"
OUT_DIR_HELP = "With --prompts: where the outputs go"
MANIFEST_HELP = "With --prompts: the JSONL record of what was made"
THRESH_HELP = "TeaCache threshold; 0 computes every step"
COMPARE_HELP = "Also run without cache: measured speedup and PSNR"
SAVE_BASELINE_HELP = "Also keep the uncached output here, with its metadata (runs the baseline)"
STRIP_HELP = "Also draw uncached beside cached into this image (runs the baseline)"


@opt.setting_options(after="cache_device")
@opt.with_options(opt.LOADING, after="overwrite")
@opt.with_options(opt.CACHING, after="coefficients")
def generate(
    prompt: PromptArg = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help=PROMPTS_HELP)] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help=OUT_DIR_HELP, show_default="the current folder")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help=MANIFEST_HELP, show_default="OUT_DIR/manifest.jsonl")
    ] = None,
    model: opt.ModelOpt = None,
    thresh: Annotated[
        float | None, typer.Option("--thresh", "-t", help=THRESH_HELP, show_default="the preset's")
    ] = None,
    budget: opt.BudgetOpt = None,
    policy: opt.PolicyOpt = "auto",
    coefficients: opt.CoefficientsOpt = None,
    image: opt.ImageOpt = None,
    num_images: opt.NumImagesOpt = 1,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file", show_default=OUT_SHOWN)] = None,
    overwrite: opt.OverwriteOpt = False,
    compare_baseline: Annotated[bool, typer.Option("--compare-baseline", help=COMPARE_HELP)] = False,
    save_baseline: Annotated[Path | None, typer.Option("--save-baseline", help=SAVE_BASELINE_HELP)] = None,
    strip: Annotated[Path | None, typer.Option("--strip", help=STRIP_HELP)] = None,
    json_report: opt.JsonOpt = False,
    strict: opt.StrictOpt = False,
    verbose: opt.VerboseOpt = False,
    **settings: Any,  # every other setting, the loading and cache options (opt.setting_options, with_options)
) -> None:
    """Generate an image, video or sound with TeaCache and report calls computed vs cached."""
    given = {**locals(), **settings}  # every option by name, as the library's specs name their fields
    del given["settings"]
    check_generate_options(given)  # everything typed is checked before anything is imported or loaded
    opt.check_seeds(given["seed"], given["num_images"])
    opt.check_text("the prompt", prompt)
    opt.check_text("--negative-prompt", given["negative_prompt"])
    if json_report:
        reserve_stdout_for_json("--json")
    import_libraries()
    from ..batch.prepare import PromptsSpec
    from ..generation.generate import GenerationSpec

    log_to_console(stderr, verbose)
    if prompts is not None:
        _generate_prompts(spec_from_options(PromptsSpec, given), json_report)
    else:
        _generate_one(spec_from_options(GenerationSpec, given), json_report)


def _generate_one(spec: Any, json_report: bool) -> None:
    """One prompt: the library's generate, its progress on stderr, then the report."""
    from ..generation.generate import prepare_generation, run_generation
    from ..generation.report import render_generation

    progress = RichProgress(stderr)
    prepared = prepare_generation(spec, progress)
    try:
        summary = run_generation(prepared, progress)
    except KeyboardInterrupt as interrupt:  # held during the final renames, until the files are in place
        interrupted(prepared.on_disk(), interrupt)
    render_report(render_generation, summary, json_report)


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
    progress = RichProgress(stderr) if launch.is_main else Quiet()
    try:
        prepared = prepare_prompts(spec, launch, progress)
    except TeacliError:
        _quiet_unless_main(launch)  # every rank sees the same arguments and files: rank 0 says it
        raise
    try:
        summary = run_prompts(prepared, progress)
    except PromptsFailed as failure:
        if failure.summary is not None:
            render_report(render_prompts, failure.summary, json_report)
        _quiet_unless_main(launch)
        raise
    except KeyboardInterrupt as interrupt:
        if not launch.is_main:
            raise typer.Exit(interrupt_exit_code(interrupt)) from None
        interrupted(prepared.on_disk(), interrupt)
    if summary is not None:
        render_report(render_prompts, summary, json_report)


def _quiet_unless_main(launch: Any) -> None:
    if not launch.is_main:
        raise typer.Exit(EXIT_USER_ERROR) from None
