"""What `generate --prompts` shows at the end: one table for the whole run, a row per rank."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..tables import Column, FittingTable

if TYPE_CHECKING:
    from .run import PromptsSummary

COLUMNS = ("rank", "device", "made", "skipped", "computed", "forced", "cached", "calls", "seconds", "speedup")


def _speedup(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_prompts(summary: PromptsSummary, console: Any) -> None:
    """The table of a prompts run (a row per rank, and their total), then what was made and where it is."""
    table = FittingTable(
        [Column(column, "left" if column in ("rank", "device") else "right", column == "rank") for column in COLUMNS],
        title=f"{summary.model}: {summary.prompts} prompts from {summary.prompts_file}",
        caption="computed / forced (first and last steps, cache window) / cached transformer calls of the outputs "
        "made now; speedup: estimate from per-call times",
    )
    for row in summary.ranks:
        table.add_row(
            str(row["rank"]), row["device"], str(row["made"]), str(row["skipped"]), str(row["computed"]),
            str(row["forced"]), str(row["cached"]), str(row["calls"]), f"{row['seconds']:.2f}",
            _speedup(row["estimated_speedup"]),
        )  # fmt: skip
    if len(summary.ranks) > 1:
        totals = summary.totals
        table.add_row(
            "total", "", str(summary.made), str(summary.skipped), *(str(totals[k]) for k in ("computed", "forced")),
            str(totals["cached"]), str(totals["calls"]), f"{summary.generation_seconds:.2f}",
            _speedup(summary.estimated_speedup), style="bold",
        )  # fmt: skip
    table.print(console)
    processes = f"{summary.world_size} process{'es' if summary.world_size > 1 else ''}"
    console.print(
        f"made {summary.made}, skipped {summary.skipped} already in the manifest, of {summary.prompts} prompts in "
        f"{summary.seconds:.1f} s ({processes})",
        highlight=False,
    )
    console.print(f"outputs in {summary.out_dir}; manifest {summary.manifest}", highlight=False)
