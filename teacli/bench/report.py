"""What a bench prints: its table (one prompt, or the means over many), then the frontier where budgets were given."""

from __future__ import annotations

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
