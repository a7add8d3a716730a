"""What the user sees after a run: one summary object, rendered with Rich or as JSON."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..engine.decision import Decision
from ..engine.stats import TeaCacheStats

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
            "settings": self.settings,
            "notes": self.notes,
            **self.stats.to_dict(),
        }


def render_generation(summary: GenerationSummary, console: Console) -> None:
    stats = summary.stats
    table = Table(
        title=f"TeaCache on {summary.model} ({summary.transformer}), {summary.headline}",
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
    if summary.policy is not None and summary.policy.plan is not None:
        console.print(f"policy: {summary.policy.name}, {summary.policy.source}", highlight=False)
    else:
        console.print(f"coefficients: {summary.coefficients_source}", highlight=False)
    console.print(f"generation: {summary.seconds:.2f} s for {summary.steps} steps")
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
        console.print(
            f"estimated speedup from {totals.cached} cached of {totals.calls} calls: {estimate:.2f}x "
            "(estimate from per-call times; --compare-baseline measures it)"
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


def by_method(rows: list[Any]) -> Iterator[tuple[Any, bool]]:
    """Bench rows, each with whether the next row starts another method (where a table ends a section)."""
    for index, row in enumerate(rows):
        yield row, index + 1 < len(rows) and rows[index + 1].config.method != row.config.method


# The figures of a bench row, after its name; a prompts bench has its own (render_prompts_bench).
BENCH_FIGURES = (
    *("computed/total", "median s", "spread s", "speedup", "ideal", "efficiency"),
    *("PSNR", "SSIM", "peak memory", "extra"),
)


def bench_table(title: str, caption: str, figures: tuple[str, ...]) -> Table:
    """A bench table: the configuration's name on the left, then its figures right-aligned."""
    table = Table(title=title, caption=caption)
    table.add_column("config", justify="left")
    for column in figures:
        table.add_column(column, justify="right")
    return table


def render_bench(result: Any, title: str, console: Console) -> None:
    """One row per configuration, vanilla first; then what was skipped and why."""
    table = bench_table(
        title,
        "ideal: the speedup if every cached call saved a whole vanilla transformer call at no cost; "
        "efficiency = speedup / ideal. PSNR and SSIM against vanilla's output (same seed).",
        BENCH_FIGURES,
    )
    for row, last_of_method in by_method(result.rows):
        is_vanilla = row is result.vanilla
        table.add_row(
            row.name,
            f"{row.computed}/{row.total}",
            f"{row.median:.3f}",
            f"{row.spread:.3f}",
            f"{result.speedup(row):.2f}x",
            f"{result.ideal_speedup(row):.2f}x",
            f"{result.efficiency(row):.3f}",
            "-" if is_vanilla else format_psnr(row.quality.psnr),
            "-" if is_vanilla or row.quality.ssim is None else f"{row.quality.ssim:.4f}",
            format_bytes(row.peak_memory_bytes).lstrip("+"),
            "-" if is_vanilla else format_bytes(result.extra_memory_bytes(row)),
            end_section=last_of_method,
        )
    console.print(table)
    for method, reason in result.skipped:
        console.print(f"[yellow]skipped {method}:[/] {escape(reason)}", highlight=False)


def render_prompts_bench(result: Any, title: str, console: Console) -> None:
    """bench --prompts: one row per configuration, vanilla first, each figure over the prompts: mean computed
    calls, mean seconds (of each prompt's median), PSNR and SSIM as mean ± std and PSNR's range (each prompt
    against its own vanilla picture). The ideal speedup and memory are in the JSON."""
    table = bench_table(
        title,
        "computed: mean calls per picture; seconds: mean over prompts of each prompt's median; PSNR and "
        "SSIM against each prompt's own vanilla picture (same seed), mean ± std and range over prompts (an "
        "identical picture counts as the PSNR cap); efficiency = speedup / ideal speedup.",
        ("computed/total", "mean s", "speedup", "efficiency", "PSNR dB", "PSNR range", "SSIM"),
    )
    for row, last_of_method in by_method(result.rows):
        is_vanilla = row is result.vanilla
        data = result.row_dict(row)
        psnr, psnr_range, ssim = "-", "-", "-"
        if data["psnr_capped"]:
            psnr = "inf (identical)"
        elif data["psnr"] is not None:
            psnr = f"{data['psnr']:.1f} ± {data['psnr_std']:.1f}"
            psnr_range = f"{data['psnr_min']:.1f}-{data['psnr_max']:.1f}"
        if data["ssim"] is not None:
            ssim = f"{data['ssim']:.4f} ± {data['ssim_std']:.4f}"
        table.add_row(
            row.name,
            f"{data['computed']:.1f}/{row.total}",
            f"{row.seconds:.3f}",
            f"{result.speedup(row):.2f}x",
            f"{result.efficiency(row):.3f}",
            *(("-", "-", "-") if is_vanilla else (psnr, psnr_range, ssim)),
            end_section=last_of_method,
        )
    console.print(table)
    for method, reason in result.skipped:
        console.print(f"[yellow]skipped {method}:[/] {escape(reason)}", highlight=False)


def render_frontier(frontier: list[dict[str, Any]], title: str, console: Console) -> None:
    """The frontier: one row per cache, one column per budget of computed calls, "PSNR / SSIM" in each
    cell, the best PSNR of each column in bold; "-" where the budget is outside the calls the cache was
    measured at (never extrapolated)."""
    budgets = list(dict.fromkeys(row["calls"] for row in frontier))
    methods = list(dict.fromkeys(row["method"] for row in frontier))
    cells = {(row["method"], row["calls"]): row for row in frontier}
    best = {
        budget: max(
            (row["psnr"] for row in frontier if row["calls"] == budget and row["psnr"] is not None), default=None
        )
        for budget in budgets
    }
    table = Table(
        title=title,
        caption="PSNR dB / SSIM against vanilla (/ % of teacli-shapes pictures the checker reads as captioned), "
        "interpolated linearly between a cache's two settings around the budget; - : outside the computed calls "
        "its settings reached. Bold: the best PSNR of the column.",
    )
    table.add_column("cache")
    for budget in budgets:
        table.add_column(f"{budget:g} calls", justify="right")
    for method in methods:
        row = [method]
        for budget in budgets:
            cell = cells.get((method, budget))
            if cell is None or cell["psnr"] is None:
                row.append("-")
                continue
            text = f"{cell['psnr']:.1f}" + (f" / {cell['ssim']:.4f}" if cell["ssim"] is not None else "")
            if cell.get("checker") is not None:
                text += f" / {cell['checker']:.0f}%"
            row.append(f"[bold]{text}[/]" if cell["psnr"] == best[budget] else text)
        table.add_row(*row)
    if not methods:
        console.print("[yellow]frontier:[/] no cache skipped any call, so there is no curve to read", highlight=False)
        return
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
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if not warnings:
        console.print("[green]data statistics: no warnings[/] (pairs, x scale, correlation, coefficient size)")
