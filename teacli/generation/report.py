"""What the user sees after a run: one summary object, rendered with Rich or as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from ..engine.decision import Decision
from ..engine.stats import TeaCacheStats
from ..models.memory import memory_description
from ..tables import Column, FittingTable

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
    thresh: float | None  # None when a schedule (policy) decided
    coefficients_source: str
    steps: int
    seconds: float
    stats: TeaCacheStats
    output: str | None = None
    baseline_seconds: float | None = None
    quality: Any = None  # measure.Quality against the baseline (PSNR, SSIM), with --compare-baseline
    media: str | None = None  # frames, size and length of a video or sound
    notes: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # every file written (several with --num-images)
    settings: dict[str, Any] = field(default_factory=dict)  # seed, batch, cache and loading options, for --json
    policy: Any = None  # teacli.generation.policy.Policy; None: TeaCache's rule at `thresh`
    request: dict[str, Any] = field(default_factory=dict)  # what was asked (metadata.request_fields), for --json
    baseline_outputs: list[str] = field(default_factory=list)  # the uncached outputs kept (save_baseline)
    strip: str | None = None  # the uncached-beside-cached picture (strip)

    @property
    def headline(self) -> str:
        """What decided: TeaCache's threshold, or the schedule's budget and where it came from."""
        if self.policy is None or self.policy.plan is None:
            return f"thresh {self.thresh:g}"
        return self.policy.describe()

    @property
    def estimated_speedup(self) -> float | None:
        return estimated_speedup(self.stats, self.seconds)

    @property
    def psnr(self) -> float | None:
        return self.quality.psnr if self.quality is not None else None

    @property
    def measured_speedup(self) -> float | None:
        return self.baseline_seconds / self.seconds if self.baseline_seconds and self.seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "transformer": self.transformer,
            "thresh": self.thresh,
            "coefficients_source": self.coefficients_source,
            **(self.policy.to_dict() if self.policy is not None else {}),
            "steps": self.steps,
            "seconds": self.seconds,
            "estimated_speedup": self.estimated_speedup,
            "baseline_seconds": self.baseline_seconds,
            "measured_speedup": self.measured_speedup,
            "psnr": self.psnr,
            "ssim": self.quality.ssim if self.quality is not None else None,
            "media": self.media,
            "output": self.output,
            "outputs": self.outputs,
            "baseline_outputs": self.baseline_outputs,
            "strip": self.strip,
            "request": self.request,
            "settings": self.settings,
            "notes": self.notes,
            **self.stats.to_dict(),
        }


def render_generation(summary: GenerationSummary, console: Console) -> None:
    stats = summary.stats
    columns = [Column(name) for name in ("calls", "computed", "forced", "cached")]
    table = FittingTable(
        [Column("branch", justify="left", names_row=True), *columns, Column("timeline", "left", flexible=True)],
        title=f"TeaCache on {summary.model} ({summary.transformer}), {summary.headline}",
        caption="timeline: F forced (first/last step), C computed, . cached",
    )
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
    table.print(console)
    if summary.policy is not None and summary.policy.plan is not None:
        console.print(f"policy: {summary.policy.name}, {summary.policy.source}", highlight=False)
    else:
        console.print(f"coefficients: {summary.coefficients_source}", highlight=False)
    console.print(f"generation: {summary.seconds:.2f} s for {summary.steps} steps")
    memory = memory_description(summary.settings.get("offload"), summary.settings.get("quantize"))
    if memory:
        console.print(f"memory: {memory}", highlight=False)
    if stats.peak_residual_bytes:
        console.print(
            f"cached residuals: {format_bytes(stats.peak_residual_bytes).lstrip('+')} at most, held on "
            f"{stats.residual_device}",
            highlight=False,
        )
    if summary.media:
        console.print(summary.media)
    estimate = summary.estimated_speedup
    if estimate is not None:
        hint = "" if summary.baseline_seconds is not None else "; --compare-baseline measures it"
        console.print(
            f"estimated speedup from {totals.cached} cached of {totals.calls} calls: {estimate:.2f}x "
            f"(estimate from per-call times{hint})"
        )
    if summary.baseline_seconds is not None:
        console.print(
            f"baseline without cache: {summary.baseline_seconds:.2f} s -> measured speedup "
            f"{summary.measured_speedup:.2f}x, PSNR vs baseline {format_psnr(summary.psnr)}"
            + (f", SSIM {summary.quality.ssim:.4f}" if summary.quality.ssim is not None else "")
        )
    for note in summary.notes:
        console.print(note)
    if summary.output:
        console.print(f"wrote {summary.output}")


def format_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    sign = "-" if value < 0 else ("+" if value > 0 else "")
    return f"{sign}{abs(value) / 2**20:.0f} MiB" if abs(value) >= 2**20 else f"{sign}{abs(value) / 1024:.0f} KiB"


def render_calibration(result: Any, console: Console) -> None:
    """The fit per denoiser (and per branch where several ran), then what the data statistics warn of."""
    settings = result.settings
    names = [Column(column, justify="left", names_row=True) for column in ("denoiser", "branch")]
    table = FittingTable(
        [*names, *(Column(column) for column in ("pairs", "x range", "y range", "Pearson r", "R^2"))],
        title=f"calibration: {settings.prompts} prompts x {settings.steps} steps, order {settings.order}",
        caption="x: rel_l1 of the modulated input, y: rel_l1 of the block output, per consecutive pair of calls",
    )

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
    table.print(console)
    for module, fitted in result.fits.items():
        values = ", ".join(f"{c:.6g}" for c in fitted.pooled.coefficients)
        console.print(f"coefficients ({module}): [{values}]", highlight=False)
    warnings = result.warnings()
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if not warnings:
        console.print("[green]data statistics: no warnings[/] (pairs, x scale, correlation, coefficient size)")
