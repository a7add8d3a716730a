"""Comparing caches at equal compute: each method's curve of quality against computed transformer calls,
read at the same budgets for every method.

A method is one cache across its settings: TeaCache across its thresholds (teacli's own policies are named
`teacache` or `teacache-...`), each peer across its settings. A point of its curve is one setting: the mean
computed calls per picture over the bench's captions, and the mean PSNR and SSIM against each caption's own
uncached picture. `frontier_rows` reads every curve at the asked budgets by piecewise-linear interpolation
between the points around the budget (sorted by calls; points with equal calls merged into their mean),
and never extrapolates: a budget outside the calls a method was measured at is None.

Pure Python, no torch: the CLI and the tests use it without loading anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Point = tuple[float, float | None]  # (computed calls, value); a None value is no measurement (SSIM of tiny frames)


def curve(points: Iterable[Point]) -> list[tuple[float, float]]:
    """The points with a value, sorted by calls; points at the same calls become one, with their mean value."""
    merged: dict[float, list[float]] = {}
    for calls, value in points:
        if value is None or not math.isfinite(calls) or not math.isfinite(value):
            continue
        merged.setdefault(float(calls), []).append(float(value))
    return [(calls, statistics.fmean(values)) for calls, values in sorted(merged.items())]


def interpolate(points: Iterable[Point], at: float) -> float | None:
    """The value of the curve through `points` at `at` calls: linear between the two points around it, exact
    at a point, None outside the measured range (or with no point at all). Never extrapolates."""
    line = curve(points)
    if not line or not math.isfinite(at) or at < line[0][0] or at > line[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(line, line[1:]):
        if x0 <= at <= x1:
            if at == x0:
                return y0
            if at == x1:
                return y1
            return y0 + (y1 - y0) * (at - x0) / (x1 - x0)
    return line[0][1]  # a single point, and `at` is exactly it


def summary(values: Sequence[float]) -> dict[str, float | None]:
    """mean, std (the sample standard deviation; 0 for one value), min and max of `values`; None when empty."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


@dataclass(frozen=True)
class CurvePoint:
    name: str  # the row: "teacache@0.2", "fbcache@0.08"
    calls: float  # mean computed calls per picture
    psnr: float | None
    ssim: float | None
    relative_seconds: float | None = None  # mean seconds per picture over vanilla's
    checker: float | None = None  # percent of pictures the teacli-shapes checker reads right, all three readings


def curves(rows: Iterable[dict[str, Any]]) -> dict[str, list[CurvePoint]]:
    """Each method's points from bench rows (BenchResult or PromptsBenchResult rows as dicts), sorted by calls.
    Vanilla is no method, and a setting that cached no call at all (teacache@0, a peer that never skipped)
    is no point of a curve: it is vanilla's picture with a cache's overhead, and a budget between it and the
    method's real points would read a line drawn to the identical-output cap."""
    found: dict[str, list[CurvePoint]] = {}
    for row in rows:
        if row["method"] == "vanilla" or row["computed"] >= row["total"]:
            continue
        speedup = row.get("speedup")
        checker = (row.get("checker") or {}).get("all")
        point = CurvePoint(
            row["name"], float(row["computed"]), row["psnr"], row["ssim"], 1.0 / speedup if speedup else None, checker
        )
        found.setdefault(row["method"], []).append(point)
    return {method: sorted(points, key=lambda p: p.calls) for method, points in found.items()}


def frontier_rows(rows: Iterable[dict[str, Any]], budgets: Sequence[float]) -> list[dict[str, Any]]:
    """One row {"method", "calls", "psnr", "ssim", "checker"} per method and budget, methods in the order they
    first appear in `rows`, budgets as given; None where the budget is outside the method's curve (checker:
    also where the prompts are not teacli-shapes captions)."""
    table = []
    for method, points in curves(rows).items():
        for budget in budgets:
            table.append(
                {
                    "method": method,
                    "calls": budget,
                    "psnr": interpolate([(p.calls, p.psnr) for p in points], budget),
                    "ssim": interpolate([(p.calls, p.ssim) for p in points], budget),
                    "checker": interpolate([(p.calls, p.checker) for p in points], budget),
                }
            )
    return table
