"""What a bench prints: its table (one prompt, or the means over many), then the frontier where budgets were given;
and the files it writes: its JSON and its plot (checked beforehand by bench.options.check_outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .suite import BenchReport


def render_report(report: BenchReport, console: Any) -> dict[str, Any]:
    """The tables (bench, then the frontier where budgets were given); the JSON data to write."""
    from ..generation.report import render_bench, render_frontier, render_prompts_bench

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
