"""The whole of `teacli calibrate` as one library call: `calibrate(CalibrateSpec) -> Calibrated`.

Load the model, fit the coefficients over the prompts (teacli.calibrate.coefficients), and with `plan` also
choose a schedule per budget from the final pictures' error (teacli.calibrate.plans); the calibrated preset
comes back, and `write_preset` writes it as a file that reads back as the same preset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..generation.preparation import LoadOptions
from ..models.catalog import Preset
from .coefficients import CalibrationError, CalibrationResult, CalibrationSettings

# The plan's defaults: gaps longer than 12 steps never won at 28 steps; forecasts pay over short gaps only;
# 8 captions made the plans measured in docs/benchmarks.md; 1 caption per call fits any model's memory.
MAX_GAP, FORECAST_GAP, PLAN_PROMPTS, BATCH = 12, 4, 8, 1
OnStep = Callable[[int, str | None], None]  # (runs completed, a new description or None)


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


@contextmanager
def _silent_bar(description: str, total: int) -> Iterator[OnStep]:
    yield lambda completed, label: None


@contextmanager
def _silent_loading(model: str) -> Iterator[None]:
    yield


@dataclass(frozen=True)
class CalibrateProgress:
    """What a calibration tells its caller while it runs (the CLI draws these; a script may ignore them)."""

    loading: Callable[[str], AbstractContextManager[None]] = _silent_loading
    bar: Callable[[str, int], AbstractContextManager[OnStep]] = _silent_bar  # (description, total)


@dataclass(frozen=True)
class CalibrateSpec:
    preset: Preset
    prompts: Sequence[str]  # prompt i runs with seed settings.seed + i
    settings: CalibrationSettings
    name: str | None = None  # of the written preset [default: the model's]
    negative_prompt: str | None = None  # records the uncond branch of true-CFG pipelines
    plan: PlanSettings | None = None  # also plan schedules
    device: str = "auto"
    dtype: str = "auto"
    load: LoadOptions = field(default_factory=LoadOptions)


@dataclass
class Calibrated:
    result: CalibrationResult  # the fit per denoiser
    planned: Any  # a teacli.calibrate.plans.PlanCalibration, or None without a plan
    preset: Preset  # the calibrated preset, named as asked

    def to_dict(self, path: Path) -> dict[str, Any]:
        from ..models.catalog import preset_to_dict

        report = {"preset": preset_to_dict(self.preset), "file": str(path), "warnings": self.result.warnings()}
        if self.planned is not None:
            report["plan_costs"] = {"steps": self.planned.steps, **self.planned.costs.to_dict()}
        return report


def calibrate(spec: CalibrateSpec, progress: CalibrateProgress = CalibrateProgress()) -> Calibrated:
    """Load the model, fit its coefficients over the prompts, plan its schedules where asked."""
    from ..generation.preparation import prepare_pipeline
    from ..models.loading import pick_device, pick_dtype
    from . import coefficients

    device = pick_device(spec.device)
    with progress.loading(spec.preset.name):
        pipe = prepare_pipeline(spec.preset, device, pick_dtype(spec.dtype, device), spec.load)
    steps, count = spec.settings.steps, len(spec.prompts)
    with progress.bar("calibrating", count * steps) as on_step:
        result = coefficients.run_calibration(
            pipe,
            spec.preset,
            spec.prompts,
            spec.settings,
            spec.negative_prompt,
            lambda index, step: on_step(index * steps + step + 1, f"prompt {index + 1}/{count}"),
        )
    planned = None if spec.plan is None else _plans(pipe, spec, progress)
    calibrated = result.preset(spec.preset, spec.name or spec.preset.name)
    if planned is not None:
        calibrated = planned.apply(replace(calibrated, plans=spec.preset.plans, budget=spec.preset.budget))
    return Calibrated(result, planned, calibrated)


def _plans(pipe: Any, spec: CalibrateSpec, progress: CalibrateProgress) -> Any:
    """run_plan_calibration on the first captions (caption i with seed + i)."""
    from ..generation.caching import teacache_configs
    from ..generation.runner import GenerationRequest
    from .plans import planned_runs, run_plan_calibration

    plan, settings = spec.plan, spec.settings
    request = GenerationRequest.from_preset(
        spec.preset, "", guidance=settings.guidance, height=settings.height, width=settings.width,
        negative_prompt=spec.negative_prompt,
    )  # fmt: skip
    requests = [
        replace(request, prompt=text, steps=settings.steps, seed=settings.seed + index)
        for index, text in enumerate(spec.prompts[: plan.prompts])
    ]
    logger = logging.getLogger("teacli")
    if logger.level < logging.WARNING and not logger.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)  # one "TeaCache enabled" line per run would bury the progress
    total = planned_runs(settings.steps, len(requests), plan.batch, plan.max_gap, plan.forecast_gap, plan.budgets)
    made = 0
    with progress.bar("planning schedules", total) as on_step:

        def on_run() -> None:
            nonlocal made
            made += 1
            on_step(made, None)

        return run_plan_calibration(
            pipe,
            requests,
            lambda chosen: teacache_configs(spec.preset, plan=chosen),
            max_gap=plan.max_gap,
            forecast_gap=plan.forecast_gap,
            budgets=list(plan.budgets),
            batch=plan.batch,
            on_run=on_run,
        )


def write_preset(preset: Preset, path: Path, overwrite: bool = False) -> None:
    """The preset as YAML, checked to read back as the same preset before it replaces anything."""
    import yaml

    from ..generation.output import write_atomic
    from ..models.catalog import parse_preset, preset_to_dict

    data = preset_to_dict(preset)
    header = f"# Written by teacli calibrate on {preset.calibration.get('date', '')}; see the calibration block.\n"
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=120)
    if replace(parse_preset(yaml.safe_load(text), str(path)), source="") != replace(preset, source=""):
        raise RuntimeError("the calibrated preset does not read back as written; please report this")
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), overwrite)
