"""The whole of `teacli calibrate` as one library call: `calibrate(CalibrateSpec) -> Calibrated`, the spec made
from what a user asks by `calibrate_spec(model, prompts, ...)`.

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
from .coefficients import CalibrationResult, CalibrationSettings
from .options import CalibrationError, PlanSettings, check_fit

OnStep = Callable[[int, str | None], None]  # (runs completed, a new description or None)


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


def calibrate_spec(
    model: str | Preset | None,
    prompts: Sequence[str],
    *,
    steps: int = 50,
    seed: int = 0,
    order: int = 4,
    guidance: float | None = None,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | None = None,
    name: str | None = None,
    plan: PlanSettings | None = None,
    device: str = "auto",
    dtype: str = "auto",
    load: LoadOptions | None = None,
) -> CalibrateSpec:
    """The CalibrateSpec for what a user asks, made before anything loads: the fit's settings checked, `model`
    resolved (offline where `load.offline`), what its pipeline cannot take refused, and the settings recorded as
    they will run (the preset's defaults where nothing was given). Prompt i runs with seed + i; `name`: of the
    written preset (default: the model's)."""
    from ..generation.runner import GenerationRequest
    from ..generation.session import check_pipeline_takes, resolve

    check_fit(steps, order)
    if name is not None and not name.strip():
        raise CalibrationError("name must not be empty", field="name")
    load = load or LoadOptions()
    preset = resolve(model, offline=load.offline)
    check_pipeline_takes(preset, guidance=guidance, height=height, width=width, negative_prompt=negative_prompt)
    request = GenerationRequest.from_preset(
        preset, "", guidance=guidance, height=height, width=width, negative_prompt=negative_prompt
    )
    settings = CalibrationSettings(
        len(prompts), steps, seed, order, request.guidance, request.height, request.width,
        negative_prompt=request.negative_prompt is not None,
    )  # fmt: skip
    return CalibrateSpec(preset, prompts, settings, name or preset.name, negative_prompt, plan, device, dtype, load)


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
    from ..models.memory import check_on_device
    from . import coefficients

    device = pick_device(spec.device)
    check_on_device(spec.load.offload, spec.load.quantize, device)  # before "loading" is said
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
