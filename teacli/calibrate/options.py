"""How a calibration is asked for, checked before anything loads: the fit's steps and order, and how schedules
are planned. Nothing here imports torch, so the command line refuses a bad value in a fraction of a second."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import TeacliError

MIN_ORDER, MAX_ORDER = 1, 6
MIN_STEPS = 3  # two steps give one pair per prompt and branch, too few to see a trend
# The plan's defaults: gaps longer than 12 steps never won at 28 steps; forecasts pay over short gaps only;
# 8 captions made the plans measured in docs/benchmarks.md; 1 caption per call fits any model's memory.
MAX_GAP, FORECAST_GAP, PLAN_PROMPTS, BATCH = 12, 4, 8, 1


class CalibrationError(TeacliError, ValueError):
    """Calibration cannot run or cannot fit; the message says why and what to do."""


def check_fit(steps: int, order: int) -> None:
    """A fit needs at least MIN_STEPS steps (each prompt gives steps - 1 pairs) and an order it can fit."""
    if steps < MIN_STEPS:
        raise CalibrationError(
            f"steps must be at least {MIN_STEPS} for calibration (each prompt gives steps - 1 pairs)", field="steps"
        )
    if not MIN_ORDER <= order <= MAX_ORDER:
        raise CalibrationError(
            f"order must be between {MIN_ORDER} and {MAX_ORDER} (4 is the TeaCache default), got {order}",
            field="order",
        )


@dataclass(frozen=True)
class PlanSettings:
    """How schedules are planned: on the first `prompts` captions, gaps of at most `max_gap` steps (forecasts of
    at most `forecast_gap`), a plan per budget in `budgets`, `batch` captions per pipeline call."""

    budgets: tuple[int, ...]
    prompts: int = PLAN_PROMPTS
    max_gap: int = MAX_GAP
    forecast_gap: int = FORECAST_GAP
    batch: int = BATCH


def plan_settings(
    steps: int,
    prompts: int | None = None,
    max_gap: int | None = None,
    forecast_gap: int | None = None,
    budgets: str | None = None,
    batch: int | None = None,
) -> PlanSettings:
    """The plan settings at `steps`, each checked (None: its default, the gaps capped to what `steps` allows)."""
    checks = (
        ("plan_prompts", prompts, 1, 1000),
        ("batch", batch, 1, 64),
        ("max_gap", max_gap, 1, steps - 2),
        ("forecast_gap", forecast_gap, 0, steps - 2),
    )
    for name, value, low, high in checks:
        if value is not None and not low <= value <= high:
            at = f" at {steps} steps" if name.endswith("gap") else ""
            raise CalibrationError(f"{name} must be between {low} and {high}{at}, got {value}", field=name)
    return PlanSettings(
        tuple(parse_budgets(budgets, steps)),
        PLAN_PROMPTS if prompts is None else prompts,
        min(MAX_GAP, steps - 2) if max_gap is None else max_gap,
        min(FORECAST_GAP, steps - 2) if forecast_gap is None else forecast_gap,
        BATCH if batch is None else batch,
    )


def parse_budgets(text: str | None, steps: int) -> list[int]:
    """Budgets as a sorted list of computed steps: '4-20', '6,8,10' or both mixed; default 2 to 70% of steps."""
    if text is None:
        return list(range(2, max(3, round(0.7 * steps)) + 1))
    values: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            message = f"budgets takes computed steps like 4-20 or 6,8,10, got {text[:40]!r}"
            raise CalibrationError(message, field="budgets") from None
        if not 2 <= first <= last <= steps:
            message = f"budgets: {part.strip()} is not within 2-{steps} (the computed steps of {steps})"
            raise CalibrationError(message, field="budgets")
        values.update(range(first, last + 1))
    return sorted(values)


def preset_file(out: Path | None, preset_name: str, overwrite: bool) -> Path:
    """Where the calibrated preset goes: `out`, or NAME-calibrated.yaml; a preset file that may be written."""
    from ..generation.output import check_writable

    out = Path(out) if out is not None else Path(preset_name.replace("/", "--") + "-calibrated.yaml")
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise CalibrationError(f"out {out} must end in .yaml or .yml: it is a preset file", field="out")
    return check_writable(out, overwrite, kind="--out")


def check_plan_options(plan: bool, **given: object) -> None:
    """The options of how plans are made go with `plan`: the first one given without it is refused."""
    named = [name for name, value in given.items() if value is not None]
    if named and not plan:
        raise CalibrationError(f"{named[0]} goes with plan; add that or drop this option", field=(named[0], "plan"))
