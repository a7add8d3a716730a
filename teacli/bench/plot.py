"""The bench plots (matplotlib, the optional `plot` extra): speedup against PSNR, one curve per method; and
with --prompts / --at-calls, PSNR against computed calls and against time, one curve per method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import TeacliError

PLOT_INSTALL = "pip install 'teacli[plot]'"


class PlotUnavailable(TeacliError, ValueError):
    """matplotlib is missing; the message says how to install it."""


def check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(f"--plot needs matplotlib, which is not installed: {PLOT_INSTALL}") from None


def plot_bench(data: dict[str, Any], path: Path, overwrite: bool = False) -> None:
    """Speedup (y) against PSNR to vanilla (x), one line per method through its settings.

    `data` is BenchResult.to_dict(): identical outputs sit at the PSNR cap, marked so in the legend.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    from ..generation.output import write_atomic

    figure, axes = plt.subplots(figsize=(7.5, 5), dpi=120)
    rows = [row for row in data["rows"] if row["psnr"] is not None]
    finite = [row["psnr"] for row in rows if not row["psnr_capped"]]
    # Identical outputs have infinite PSNR: they sit at a marked column right of the finite points.
    identical_x = (max(finite) + max(3.0, 0.1 * (max(finite) - min(finite)))) if finite else data.get("psnr_cap", 100.0)

    def x(row: dict) -> float:
        return identical_x if row["psnr_capped"] else row["psnr"]

    methods: dict[str, list[dict]] = {}
    for row in rows:
        quantize = row.get("quantize")  # one curve per method and quantization
        methods.setdefault(row["method"] + (f" +{quantize}" if quantize else ""), []).append(row)
    for method, points in methods.items():
        points = sorted(points, key=x, reverse=True)
        axes.plot(
            [x(r) for r in points],
            [r["speedup"] for r in points],
            marker="o",
            linestyle="-" if len(points) > 1 else "",
            label=method,
        )
        for row in points:
            label = row["name"].split("@", 1)[1] if "@" in row["name"] else row["name"]
            axes.annotate(label, (x(row), row["speedup"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    if any(row["psnr_capped"] for row in rows):
        axes.axvline(identical_x, color="grey", linewidth=0.8, linestyle=":")
        axes.annotate(
            "identical to vanilla",
            (identical_x, 1.0),
            fontsize=7,
            rotation=90,
            color="grey",
            xytext=(-9, 10),
            textcoords="offset points",
        )
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_xlabel("PSNR against vanilla (dB): higher is closer")
    axes.set_ylabel("speedup over vanilla (median wall clock)")
    axes.set_title(f"{data.get('model', '')}: {data.get('steps', '')} steps, {data.get('device', '')}")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    try:
        write_atomic(path, lambda temporary: figure.savefig(temporary, format="png"), overwrite)
    finally:
        plt.close(figure)


def plot_frontier(data: dict[str, Any], path: Path, overwrite: bool = False) -> None:
    """Two panels from PromptsBenchResult.to_dict(): mean PSNR against mean computed calls per picture (the
    --at-calls budgets marked), and mean PSNR against mean time relative to vanilla; one curve per method
    through its settings. Settings that cached no call are left out, as in the frontier table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..generation.output import write_atomic
    from .frontier import curves

    found = curves(data["rows"])
    figure, (by_calls, by_time) = plt.subplots(1, 2, figsize=(12, 5), dpi=120)
    for method, points in found.items():
        points = [p for p in points if p.psnr is not None]
        if not points:
            continue
        (line,) = by_calls.plot([p.calls for p in points], [p.psnr for p in points], marker="o", label=method)
        timed = [p for p in points if p.relative_seconds is not None]  # joined in the order of calls, as on the left
        by_time.plot(
            [p.relative_seconds for p in timed],
            [p.psnr for p in timed],
            marker="o",
            color=line.get_color(),
            label=method,
        )
    for budget in data.get("at_calls", []):
        by_calls.axvline(budget, color="grey", linewidth=0.6, linestyle=":")
    calls = data.get("calls_per_picture")
    count = len(data.get("prompts", []))
    by_calls.set_xlabel(f"computed transformer calls per picture (mean; of {calls})")
    by_time.set_xlabel("time per picture relative to vanilla (mean over prompts)")
    by_time.axvline(1.0, color="grey", linewidth=0.8)
    for axes in (by_calls, by_time):
        axes.set_ylabel("PSNR against vanilla, dB (mean over prompts)")
        axes.grid(True, alpha=0.3)
        if found:
            axes.legend()
    figure.suptitle(
        f"{data.get('model', '')}: {data.get('steps', '')} steps, {calls} calls per picture, {count} prompt"
        f"{'s' if count != 1 else ''}, {data.get('device', '')}"
    )
    figure.tight_layout()
    try:
        write_atomic(path, lambda temporary: figure.savefig(temporary, format="png"), overwrite)
    finally:
        plt.close(figure)
