"""The bench plot: speedup against PSNR, one curve per method (matplotlib, the optional `plot` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOT_INSTALL = "pip install 'teacli[plot]'"


class PlotUnavailable(ValueError):
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

    from .output import write_atomic

    figure, axes = plt.subplots(figsize=(7.5, 5), dpi=120)
    rows = [row for row in data["rows"] if row["psnr"] is not None]
    finite = [row["psnr"] for row in rows if not row["psnr_capped"]]
    # Identical outputs have infinite PSNR: they sit at a marked column right of the finite points.
    identical_x = (max(finite) + max(3.0, 0.1 * (max(finite) - min(finite)))) if finite else data.get("psnr_cap", 100.0)

    def x(row: dict) -> float:
        return identical_x if row["psnr_capped"] else row["psnr"]

    methods: dict[str, list[dict]] = {}
    for row in rows:
        methods.setdefault(row["method"], []).append(row)
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
