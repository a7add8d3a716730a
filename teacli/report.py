"""What the user sees after a run: one summary object, rendered with Rich or as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .decision import Decision
from .stats import TeaCacheStats

TIMELINE_MARKS = {
    Decision.COMPUTED: ("C", "bold green"),
    Decision.FORCED: ("F", "bold blue"),
    Decision.CACHED: (".", "yellow"),
}


def estimated_speedup(stats: TeaCacheStats, seconds: float) -> float | None:
    """Generation time without caching over the measured time, assuming every cached call would
    have cost the mean of the computed ones. An estimate: the baseline run measures it for real."""
    executed = [r.seconds for r in stats.records if r.decision is not Decision.CACHED]
    if not executed or seconds <= 0:
        return None
    outside_transformer = max(seconds - stats.seconds(), 0.0)
    uncached = outside_transformer + len(stats.records) * (sum(executed) / len(executed))
    return uncached / seconds


def format_psnr(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf (identical)" if math.isinf(value) else f"{value:.2f} dB"


def timeline(stats: TeaCacheStats, module: str, branch: str) -> Text:
    text = Text()
    for decision in stats.timeline(module, branch):
        mark, style = TIMELINE_MARKS[decision]
        text.append(mark, style=style)
    return text


@dataclass
class GenerationSummary:
    model: str
    transformer: str
    thresh: float
    coefficients_source: str
    steps: int
    seconds: float
    stats: TeaCacheStats
    output: str | None = None
    baseline_seconds: float | None = None
    psnr: float | None = None
    media: str | None = None  # frames, size and length of a video or sound
    notes: list[str] = field(default_factory=list)

    @property
    def estimated_speedup(self) -> float | None:
        return estimated_speedup(self.stats, self.seconds)

    @property
    def measured_speedup(self) -> float | None:
        return self.baseline_seconds / self.seconds if self.baseline_seconds and self.seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "transformer": self.transformer,
            "thresh": self.thresh,
            "coefficients_source": self.coefficients_source,
            "steps": self.steps,
            "seconds": self.seconds,
            "estimated_speedup": self.estimated_speedup,
            "baseline_seconds": self.baseline_seconds,
            "measured_speedup": self.measured_speedup,
            "psnr": self.psnr,
            "media": self.media,
            "output": self.output,
            **self.stats.to_dict(),
        }


def render_generation(summary: GenerationSummary, console: Console) -> None:
    stats = summary.stats
    table = Table(
        title=f"TeaCache on {summary.model} ({summary.transformer}), thresh {summary.thresh:g}",
        caption="timeline: F forced (first/last step), C computed, . cached",
    )
    table.add_column("branch")
    for column in ("calls", "computed", "forced", "cached"):
        table.add_column(column, justify="right")
    table.add_column("timeline", overflow="fold")
    multiple_modules = len({module for module, _ in stats.branches()}) > 1
    for (module, branch), totals in stats.by_branch().items():
        label = f"{module}/{branch}" if multiple_modules else branch
        table.add_row(
            label,
            str(totals.calls),
            str(totals.computed),
            str(totals.forced),
            str(totals.cached),
            timeline(stats, module, branch),
        )
    totals = stats.totals
    table.add_row(
        "total",
        str(totals.calls),
        str(totals.computed),
        str(totals.forced),
        str(totals.cached),
        "",
        style="bold",
    )
    console.print(table)
    console.print(f"coefficients: {summary.coefficients_source}", highlight=False)
    console.print(f"generation: {summary.seconds:.2f} s for {summary.steps} steps")
    if summary.media:
        console.print(summary.media)
    estimate = summary.estimated_speedup
    if estimate is not None:
        console.print(
            f"estimated speedup from {totals.cached} cached of {totals.calls} calls: {estimate:.2f}x "
            "(estimate from per-call times; --compare-baseline measures it)"
        )
    if summary.baseline_seconds is not None:
        console.print(
            f"baseline without cache: {summary.baseline_seconds:.2f} s -> measured speedup "
            f"{summary.measured_speedup:.2f}x, PSNR vs baseline {format_psnr(summary.psnr)}"
        )
    for note in summary.notes:
        console.print(note)
    if summary.output:
        console.print(f"wrote {summary.output}")


@dataclass
class BenchRow:
    label: str
    thresh: float | None  # None for the uncached baseline
    computed: int
    calls: int
    seconds: list[float]
    psnr: float | None = None

    @property
    def median(self) -> float:
        ordered = sorted(self.seconds)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    @property
    def spread(self) -> float:
        return max(self.seconds) - min(self.seconds)

    def to_dict(self, baseline: BenchRow | None) -> dict[str, Any]:
        return {
            "label": self.label,
            "thresh": self.thresh,
            "computed": self.computed,
            "calls": self.calls,
            "seconds": self.seconds,
            "median_seconds": self.median,
            "spread_seconds": self.spread,
            "speedup": baseline.median / self.median if baseline else None,
            "psnr": None if self.psnr is None or math.isinf(self.psnr) else self.psnr,
            "identical_to_baseline": self.psnr is not None and math.isinf(self.psnr),
        }


def render_bench(rows: list[BenchRow], baseline: BenchRow | None, title: str, console: Console) -> None:
    table = Table(title=title)
    for column, justify in (
        ("config", "left"),
        ("computed/total", "right"),
        ("median s", "right"),
        ("spread s", "right"),
        ("speedup", "right"),
        ("PSNR vs baseline", "right"),
    ):
        table.add_column(column, justify=justify)
    for row in ([baseline] if baseline else []) + rows:
        speedup = f"{baseline.median / row.median:.2f}x" if baseline else "-"
        table.add_row(
            row.label,
            f"{row.computed}/{row.calls}",
            f"{row.median:.3f}",
            f"{row.spread:.3f}",
            speedup,
            format_psnr(row.psnr) if row is not baseline else "-",
        )
    console.print(table)


def render_calibration(result: Any, console: Console) -> None:
    """The fit per denoiser (and per branch where several ran), then what the data statistics warn of."""
    settings = result.settings
    table = Table(
        title=f"calibration: {settings.prompts} prompts x {settings.steps} steps, order {settings.order}",
        caption="x: rel_l1 of the modulated input, y: rel_l1 of the block output, per consecutive pair of calls",
    )
    for column in ("denoiser", "branch", "pairs", "x range", "y range", "Pearson r", "R^2"):
        table.add_column(column, justify="left" if column in ("denoiser", "branch") else "right")

    def add(module: str, branch: str, fit: Any, style: str = "") -> None:
        r = "-" if math.isnan(fit.correlation) else f"{fit.correlation:.3f}"
        table.add_row(
            module,
            branch,
            str(fit.pairs),
            f"{fit.x_range[0]:.4f} - {fit.x_range[1]:.4f}",
            f"{fit.y_range[0]:.4f} - {fit.y_range[1]:.4f}",
            r,
            f"{fit.r2:.4f}",
            style=style,
        )

    for module, fitted in result.fits.items():
        add(
            module, "all" if fitted.branches else next(b for m, b in result.pairs if m == module), fitted.pooled, "bold"
        )
        for branch, fit in fitted.branches.items():
            add(module, branch, fit, "dim")
    console.print(table)
    for module, fitted in result.fits.items():
        values = ", ".join(f"{c:.6g}" for c in fitted.pooled.coefficients)
        console.print(f"coefficients ({module}): [{values}]", highlight=False)
    warnings = result.warnings()
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if not warnings:
        console.print("[green]data statistics: no warnings[/] (pairs, x scale, correlation, coefficient size)")
