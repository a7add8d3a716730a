"""What a bench prints: its table (one prompt, or the means over many), what to know about its timing, then the
frontier where budgets were given; and the files it writes: its JSON and its plot (checked beforehand by
bench.options.check_outputs).

Every table reads at 80 columns: the config column is never shortened, and the figures that do not fit go on in
a table under the first (teacli.tables)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..generation.report import format_bytes, format_psnr
from ..tables import Column, FittingTable
from .suite import BenchReport


def render_report(report: BenchReport, console: Any) -> dict[str, Any]:
    """The tables (bench, then the frontier where budgets were given); the JSON data to write."""
    data = report.to_dict()
    if not report.spec.over_prompts:
        render_bench(report.result, report.title, console)
        return data
    render_prompts_bench(report.result, report.title, console)
    if report.spec.at_calls:
        render_frontier(data["frontier"], report.frontier_title, console)
    return data


def save_report(
    report: BenchReport, data: dict[str, Any], json_file: Path | None, plot: Path | None, overwrite: bool, console: Any
) -> None:
    """The JSON `data` in `json_file` and the plot (speedup against PSNR; the frontier over prompts) in `plot`,
    where given, each told on `console` once written."""
    from ..generation.output import save_json
    from .plot import plot_bench, plot_frontier

    if json_file is not None:
        save_json(data, json_file, overwrite)
        console.print(f"wrote {json_file}")
    if plot is not None:
        (plot_frontier if report.spec.over_prompts else plot_bench)(data, plot, overwrite)
        console.print(f"wrote {plot}")


def by_method(rows: list[Any]) -> Iterator[tuple[Any, bool]]:
    """Bench rows, each with whether the next row starts another method (where a table ends a section)."""
    for index, row in enumerate(rows):
        yield row, index + 1 < len(rows) and rows[index + 1].config.method != row.config.method


# The figures of a bench row, after its name; a prompts bench has its own (render_prompts_bench).
BENCH_FIGURES = (
    *("computed/total", "median s", "spread s", "speedup", "ideal", "efficiency"),
    *("PSNR", "SSIM", "peak memory", "extra"),
)
PROMPTS_FIGURES = ("computed/total", "mean s", "speedup", "efficiency", "PSNR dB", "PSNR range", "SSIM")


def bench_table(title: str, caption: str, figures: tuple[str, ...]) -> FittingTable:
    """A bench table: the configuration's name on the left, whole at any width, then its figures right-aligned."""
    columns = [Column("config", justify="left", names_row=True), *(Column(figure) for figure in figures)]
    return FittingTable(columns, title=title, caption=caption)


def render_bench(result: Any, title: str, console: Any) -> None:
    """One row per configuration, vanilla first; what to know about the timing; then what was skipped and why."""
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
    table.print(console)
    render_notes(result, console)


def render_prompts_bench(result: Any, title: str, console: Any) -> None:
    """bench --prompts: one row per configuration, vanilla first, each figure over the prompts: mean computed
    calls, mean seconds (of each prompt's median), PSNR and SSIM as mean ± std and PSNR's range (each prompt
    against its own vanilla picture). The ideal speedup and memory are in the JSON."""
    table = bench_table(
        title,
        "computed: mean calls per picture; seconds: mean over prompts of each prompt's median; PSNR and "
        "SSIM against each prompt's own vanilla picture (same seed), mean ± std and range over prompts (an "
        "identical picture counts as the PSNR cap); efficiency = speedup / ideal speedup.",
        PROMPTS_FIGURES,
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
    table.print(console)
    render_notes(result, console)


def render_notes(result: Any, console: Any) -> None:
    """Under the table: whether its timings can be read, then the caches that did not run and why."""
    for note in result.timing_notes():
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for method, reason in result.skipped:
        console.print(f"[yellow]skipped {method}:[/] {escape(reason)}", highlight=False)


def render_frontier(frontier: list[dict[str, Any]], title: str, console: Any) -> None:
    """The frontier: one row per cache, one column per budget of computed calls, "PSNR / SSIM" in each
    cell, the best PSNR of each column in bold; "-" where the budget is outside the calls the cache was
    measured at (never extrapolated)."""
    budgets = list(dict.fromkeys(row["calls"] for row in frontier))
    methods = list(dict.fromkeys(row["method"] for row in frontier))
    if not methods:
        console.print("[yellow]frontier:[/] no cache skipped any call, so there is no curve to read", highlight=False)
        return
    cells = {(row["method"], row["calls"]): row for row in frontier}
    best = {
        budget: max(
            (row["psnr"] for row in frontier if row["calls"] == budget and row["psnr"] is not None), default=None
        )
        for budget in budgets
    }
    table = FittingTable(
        [Column("cache", justify="left", names_row=True), *(Column(f"{budget:g} calls") for budget in budgets)],
        title=title,
        caption="PSNR dB / SSIM against vanilla (/ % of teacli-shapes pictures the checker reads as captioned), "
        "interpolated linearly between a cache's two settings around the budget; - : outside the computed calls "
        "its settings reached. Bold: the best PSNR of the column.",
    )
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
    table.print(console)
