"""What a calibration prints: its fit (teacli.generation.report.render_calibration), the planned schedules, and
where the preset was written."""

from __future__ import annotations

from typing import Any


def render_plans(planned: Any, console: Any) -> None:
    """The chosen plan per budget and what the calibration cost."""
    from ..tables import Column, FittingTable
    from .plans import psnr_of

    table = FittingTable(  # a schedule is marks, not words: it folds at the console's edge rather than be cut
        [Column("budget", names_row=True), Column("PSNR dB"), Column("schedule", "left", flexible=True)],
        title=f"planned schedules at {planned.steps} steps ({planned.captions} captions)",
        caption="C computed, f forecast, . reused; PSNR of the final pictures against uncached, calibration captions",
    )
    for budget, chosen in sorted(planned.chosen.items()):
        table.add_row(str(budget), f"{psnr_of(chosen.error):.1f}", chosen.plan.timeline())
    table.print(console)
    console.print(
        f"planning cost {planned.calls} computed transformer calls per caption and CFG branch "
        f"({planned.calls / planned.steps:.0f} uncached generations' worth)",
        highlight=False,
    )


def render_calibrated(calibrated: Any, console: Any) -> None:
    """The fit per denoiser, then the planned schedules where there are some."""
    from ..generation.report import render_calibration

    render_calibration(calibrated.result, console)
    if calibrated.planned is not None:
        render_plans(calibrated.planned, console)


def render_written(preset: Any, path: Any, console: Any) -> None:
    """Where the calibrated preset was written, and the two ways to use it."""
    console.print(f'wrote {path}: use it with `teacli generate --model {path} "..."`', highlight=False)
    console.print(
        "or put it in a user preset directory (docs/models.md, 'User presets') to replace or add "
        f"'{preset.name}' by name",
        highlight=False,
    )
