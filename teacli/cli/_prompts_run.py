"""teacli generate --prompts FILE: the library's prompts run (teacli.batch) behind a progress display and one
report. Under torchrun or accelerate launch only rank 0 speaks; the others say nothing but exit alike."""

from __future__ import annotations

from typing import Any

import typer

from ..errors import TeacliError
from ._app import EXIT_USER_ERROR, ReportConsole, interrupt_exit_code, print_error, print_json


def generate_prompts(spec: Any, json_report: bool) -> None:
    """One output per prompt of spec.prompts (a teacli.batch.prepare.PromptsSpec), then the report."""
    import logging
    import warnings

    from ..batch.distributed import launch_from_env
    from ..batch.prepare import prepare_prompts
    from ..batch.run import PromptsFailed, run_prompts
    from ..generation.progress import Quiet
    from ._session import RichProgress

    launch = launch_from_env()
    if not launch.is_main:
        # Only rank 0 reports; the others say nothing but their own errors.
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
            render_prompts(failure.summary, json_report)
        _quiet_unless_main(launch)
        raise
    except KeyboardInterrupt as interrupt:
        if launch.is_main:
            where = prepared.manifest if not launch.distributed else f"{prepared.manifest} and its part files"
            print_error(
                f"interrupted; {len(prepared.made)} output(s) of this process are recorded in {where}; "
                "run the same command again to make the rest"
            )
        raise typer.Exit(interrupt_exit_code(interrupt)) from None
    if summary is not None:
        render_prompts(summary, json_report)


def _quiet_unless_main(launch: Any) -> None:
    if not launch.is_main:
        raise typer.Exit(EXIT_USER_ERROR) from None


def render_prompts(summary: Any, json_report: bool) -> None:
    """One table for the whole run (a row per rank), and with --json the same as JSON on stdout."""
    from rich.table import Table

    console = ReportConsole(stderr=json_report)
    table = Table(
        title=f"{summary.model}: {summary.prompts} prompts from {summary.prompts_file}",
        caption="computed / forced (first and last steps, cache window) / cached transformer calls of the outputs "
        "made now; speedup: estimate from per-call times",
    )
    for column in ("rank", "device", "made", "skipped", "computed", "forced", "cached", "calls", "seconds", "speedup"):
        table.add_column(column, justify="left" if column in ("rank", "device") else "right")

    def speedup(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    for row in summary.ranks:
        table.add_row(
            str(row["rank"]), row["device"], str(row["made"]), str(row["skipped"]), str(row["computed"]),
            str(row["forced"]), str(row["cached"]), str(row["calls"]), f"{row['seconds']:.2f}",
            speedup(row["estimated_speedup"]),
        )  # fmt: skip
    if len(summary.ranks) > 1:
        totals = summary.totals
        table.add_row(
            "total", "", str(summary.made), str(summary.skipped), *(str(totals[k]) for k in ("computed", "forced")),
            str(totals["cached"]), str(totals["calls"]), f"{summary.generation_seconds:.2f}",
            speedup(summary.estimated_speedup), style="bold",
        )  # fmt: skip
    console.print(table)
    processes = f"{summary.world_size} process{'es' if summary.world_size > 1 else ''}"
    console.print(
        f"made {summary.made}, skipped {summary.skipped} already in the manifest, of {summary.prompts} prompts in "
        f"{summary.seconds:.1f} s ({processes})",
        highlight=False,
    )
    console.print(f"outputs in {summary.out_dir}; manifest {summary.manifest}", highlight=False)
    if json_report:
        print_json(summary.to_dict())
