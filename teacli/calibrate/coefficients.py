"""Fitting TeaCache coefficients on a model: record (x, y) pairs from uncached runs, fit a polynomial.

For every pair of consecutive transformer calls of the same CFG branch and denoiser,
x = rel_l1 of the modulated input (what the decision measures) and y = rel_l1 of the blocks'
output (what caching gets wrong when it reuses a residual). The fitted y(x) turns the cheap x into
an estimate of the output change, which the decision accumulates against the threshold.
"""

from __future__ import annotations

import datetime
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..engine.stats import TeaCacheStats
from ..models.catalog import ExpertOverride, Preset
from .options import MAX_ORDER, MIN_ORDER, CalibrationError

# The data-statistics guide of vllm-omni's TeaCache design: below these the fit is suspect.
FEW_PAIRS = 1000
TINY_X = 1e-3
WEAK_CORRELATION = 0.5
HUGE_COEFFICIENT = 1e8
# A branch whose own fit explains its data this much better than the pooled fit differs from it.
BRANCH_R2_GAP = 0.05
CALIBRATED = "calibrated"


@dataclass(frozen=True)
class Fit:
    """A polynomial y(x), highest power first (numpy.poly1d order), and the data it was fitted on."""

    coefficients: tuple[float, ...]
    r2: float
    pairs: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    x_median: float
    correlation: float  # Pearson r of x and y; nan when either is constant
    well_conditioned: bool = True  # numpy.polyfit raised no RankWarning

    @property
    def order(self) -> int:
        return len(self.coefficients) - 1

    def predict(self, x: Any) -> np.ndarray:
        return np.polyval(self.coefficients, np.asarray(x, dtype=np.float64))

    def r2_on(self, x: Sequence[float], y: Sequence[float]) -> float:
        return _r2(np.asarray(y, dtype=np.float64), self.predict(x))

    def summary(self) -> dict[str, Any]:
        return {
            "coefficients": [float(c) for c in self.coefficients],
            "r2": round(self.r2, 6),
            "pairs": self.pairs,
            "x_range": [float(v) for v in self.x_range],
            "y_range": [float(v) for v in self.y_range],
        }


def _r2(y: np.ndarray, predicted: np.ndarray) -> float:
    total = float(np.sum((y - y.mean()) ** 2))
    residual = float(np.sum((y - predicted) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


def fit_polynomial(x: Sequence[float], y: Sequence[float], order: int = 4) -> Fit:
    """Least-squares polynomial of y on x (numpy.polyfit) with R^2 and the statistics the warnings read."""
    if not MIN_ORDER <= order <= MAX_ORDER:
        raise CalibrationError(f"--order must be between {MIN_ORDER} and {MAX_ORDER}, got {order}")
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise CalibrationError(f"x and y must be two lists of the same length, got {xs.shape} and {ys.shape}")
    if len(xs) <= order:
        raise CalibrationError(
            f"{len(xs)} (x, y) pairs cannot fit an order-{order} polynomial (it needs at least {order + 1}); "
            "use more prompts or steps, or a lower --order"
        )
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise CalibrationError("the recorded distances hold NaN or infinity: the model's outputs are not finite")
    if np.ptp(xs) == 0.0:
        raise CalibrationError(
            f"every x is {xs[0]:g}: the modulated input does not change between steps, so nothing can be fitted; "
            "check the extractor's modulated input"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coefficients = np.polyfit(xs, ys, order)
    rank_warning = getattr(np, "exceptions", np).RankWarning  # numpy < 1.25 has it at the top level
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = float(np.corrcoef(xs, ys)[0, 1]) if np.ptp(ys) > 0 else math.nan
    return Fit(
        coefficients=tuple(float(c) for c in coefficients),
        r2=_r2(ys, np.polyval(coefficients, xs)),
        pairs=len(xs),
        x_range=(float(xs.min()), float(xs.max())),
        y_range=(float(ys.min()), float(ys.max())),
        x_median=float(np.median(xs)),
        correlation=correlation,
        well_conditioned=not any(issubclass(w.category, rank_warning) for w in caught),
    )


def collect_pairs(stats: TeaCacheStats) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
    """(x, y) lists per (denoiser, branch) from hook records made with record_output_change."""
    pairs: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for record in stats.records:
        if record.rel_l1 is None or record.output_rel_l1 is None:
            continue
        xs, ys = pairs.setdefault((record.module, record.branch), ([], []))
        xs.append(record.rel_l1)
        ys.append(record.output_rel_l1)
    return pairs


@dataclass(frozen=True)
class CalibrationSettings:
    """How a calibration ran, as the preset's `calibration` block records it. Not made from teacli.settings: it
    records only what shapes the fit (negative_prompt: whether one was used), and a new generation setting joins
    calibration by choice, not by default."""

    prompts: int
    steps: int
    seed: int
    order: int = 4
    guidance: float | None = None
    height: int | None = None
    width: int | None = None
    negative_prompt: bool = False


@dataclass
class DenoiserFit:
    """The fit of one denoiser, pooled over its CFG branches, and one per branch."""

    module: str
    pooled: Fit
    branches: dict[str, Fit] = field(default_factory=dict)  # only when there are several

    def differing_branches(self, pairs: dict[str, tuple[list[float], list[float]]]) -> list[str]:
        """Branches whose own fit explains their data clearly better than the pooled one."""
        return [name for name, fit in self.branches.items() if fit.r2 - self.pooled.r2_on(*pairs[name]) > BRANCH_R2_GAP]


@dataclass
class CalibrationResult:
    settings: CalibrationSettings
    fits: dict[str, DenoiserFit]  # per denoiser ("transformer", "transformer_2")
    pairs: dict[tuple[str, str], tuple[list[float], list[float]]]
    versions: dict[str, str] = field(default_factory=dict)
    date: str = field(default_factory=lambda: datetime.date.today().isoformat())

    def branch_pairs(self, module: str) -> dict[str, tuple[list[float], list[float]]]:
        return {branch: data for (owner, branch), data in self.pairs.items() if owner == module}

    def warnings(self) -> list[str]:
        """What the data says about the fit's trustworthiness, as the vllm-omni statistics guide lists."""
        notes = []
        for module, fitted in self.fits.items():
            fit = fitted.pooled
            where = module if len(self.fits) > 1 else "the data"
            if fit.pairs < FEW_PAIRS:
                notes.append(
                    f"{where}: only {fit.pairs} pairs (under {FEW_PAIRS}); use more prompts or steps "
                    "for a fit that holds on other prompts"
                )
            if fit.x_median < TINY_X:
                notes.append(
                    f"{where}: x (input change) has median {fit.x_median:.2g}, under {TINY_X:g}; the modulated "
                    "input barely moves: check the extractor modulates it with the timestep"
                )
            if fit.correlation <= -WEAK_CORRELATION:
                notes.append(
                    f"{where}: y (output change) falls as x rises (Pearson r {fit.correlation:.2f}); the modulated "
                    "input moves against the output: check the extractor's modulated input"
                )
            elif not fit.correlation >= WEAK_CORRELATION:  # also catches nan
                r = "undefined" if math.isnan(fit.correlation) else f"{fit.correlation:.2f}"
                notes.append(
                    f"{where}: y (output change) is not correlated with x (Pearson r {r}); check the extractor: "
                    "its modulated input should predict how much the output moves"
                )
            if not fit.well_conditioned:
                notes.append(
                    f"{where}: the order-{fit.order} fit is poorly conditioned (numpy RankWarning): too few "
                    "distinct x values for this order; use more prompts or steps, or a lower --order"
                )
            largest = max(abs(c) for c in fit.coefficients)
            if largest > HUGE_COEFFICIENT:
                notes.append(
                    f"{where}: a coefficient is {largest:.3g} in magnitude (over {HUGE_COEFFICIENT:g}); the fit is "
                    "numerically unstable: use a lower --order or more data"
                )
            for branch in fitted.differing_branches(self.branch_pairs(module)):
                notes.append(
                    f"{module}/{branch}: this branch's own fit (R^2 {fitted.branches[branch].r2:.3f}) explains it "
                    "clearly better than the pooled one the preset uses; the per-branch fits are in the "
                    "calibration block"
                )
        return notes

    def calibration_block(self, base: Preset) -> dict[str, Any]:
        """What the preset records about how its coefficients were made."""
        settings = self.settings
        main = self.fits["transformer"]
        block: dict[str, Any] = {
            "date": self.date,
            **self.versions,
            "from_preset": base.name,
            "prompts": settings.prompts,
            "steps": settings.steps,
            "guidance": settings.guidance,
            "height": settings.height,
            "width": settings.width,
            "negative_prompt": settings.negative_prompt,
            "seed": settings.seed,
            "order": settings.order,
            "r2": round(main.pooled.r2, 6),
            "pairs": main.pooled.pairs,
            "x_range": [float(v) for v in main.pooled.x_range],
            "y_range": [float(v) for v in main.pooled.y_range],
        }
        if main.branches:
            block["branches"] = {name: fit.summary() for name, fit in main.branches.items()}
        experts = {}
        for module, fitted in self.fits.items():
            if module != "transformer":
                experts[module] = fitted.pooled.summary()
                if fitted.branches:
                    experts[module]["branches"] = {name: fit.summary() for name, fit in fitted.branches.items()}
        if experts:
            block["experts"] = experts
        return {key: value for key, value in block.items() if value is not None}

    def preset(self, base: Preset, name: str | None = None) -> Preset:
        """`base` with the fitted coefficients and their x range (so the decision never extrapolates)."""
        main = self.fits["transformer"].pooled
        experts = dict(base.experts)
        for module, fitted in self.fits.items():
            if module != "transformer":
                experts[module] = replace(
                    experts.get(module, ExpertOverride()),
                    coefficients=fitted.pooled.coefficients,
                    coefficients_source=CALIBRATED,
                    rel_l1_range=fitted.pooled.x_range,
                )
        return replace(
            base,
            name=name or base.name,
            coefficients=main.coefficients,
            coefficients_source=CALIBRATED,
            rel_l1_range=main.x_range,
            experts=experts,
            calibration=self.calibration_block(base),
            source="",
        )


def fit_pairs(
    pairs: dict[tuple[str, str], tuple[list[float], list[float]]], settings: CalibrationSettings
) -> dict[str, DenoiserFit]:
    """One pooled fit per denoiser, plus one per branch where a denoiser ran several branches."""
    if not pairs:
        raise CalibrationError(
            "no (x, y) pairs were recorded: the transformer was not called through its extractor; "
            "check that the pipeline calls its transformer"
        )
    fits = {}
    for module in dict.fromkeys(owner for owner, _ in pairs):
        branches = {branch: data for (owner, branch), data in pairs.items() if owner == module}
        xs = [x for data in branches.values() for x in data[0]]
        ys = [y for data in branches.values() for y in data[1]]
        per_branch = {}
        if len(branches) > 1:
            per_branch = {
                branch: fit_polynomial(*data, settings.order)
                for branch, data in branches.items()
                if len(data[0]) > settings.order
            }
        fits[module] = DenoiserFit(module, fit_polynomial(xs, ys, settings.order), per_branch)
    if "transformer" not in fits:
        raise CalibrationError(f"the pipeline's transformer recorded no pairs (only {', '.join(fits)})")
    return fits


def versions() -> dict[str, str]:
    import diffusers
    import torch

    from .. import __version__

    return {
        "teacli_version": __version__,
        "diffusers_version": diffusers.__version__,
        "torch_version": str(torch.__version__),
    }


def run_calibration(
    pipe: Any,
    preset: Preset,
    prompts: Sequence[str],
    settings: CalibrationSettings,
    negative_prompt: str | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> CalibrationResult:
    """Run the uncached pipeline over the prompts (seed, seed+1, ...) and fit y(x) per denoiser.

    `on_step(prompt_index, step)` is called after every denoising step where the pipeline has a
    step callback, and once per prompt with the last step otherwise.
    """
    from ..engine.apply import apply_teacache
    from ..generation.caching import teacache_configs
    from ..generation.runner import GenerationRequest, call_parameters, pipeline_kwargs

    configs = teacache_configs(preset, thresh=0.0)
    recording = (
        {name: replace(config, record_output_change=True) for name, config in configs.items()}
        if isinstance(configs, dict)
        else replace(configs, record_output_change=True)
    )
    parameters = call_parameters(pipe)
    handle = apply_teacache(pipe, recording)
    try:
        for index, prompt in enumerate(prompts):
            request = GenerationRequest.from_preset(
                preset,
                prompt,
                steps=settings.steps,
                seed=settings.seed + index,
                guidance=settings.guidance,
                height=settings.height,
                width=settings.width,
                negative_prompt=negative_prompt,
            )
            kwargs = pipeline_kwargs(pipe, request)
            if "output_type" in parameters:
                kwargs["output_type"] = "latent"  # the fit needs the transformer calls, not decoded pixels
            if on_step is not None and "callback_on_step_end" in parameters:
                kwargs["callback_on_step_end"] = _step_callback(on_step, index)
            pipe(**kwargs)
            if on_step is not None:
                on_step(index, settings.steps - 1)
    finally:
        handle.remove()
    pairs = collect_pairs(handle.stats)
    return CalibrationResult(settings, fit_pairs(pairs, settings), pairs, versions())


def _step_callback(on_step: Callable[[int, int], None], index: int) -> Callable[..., dict]:
    def callback(_pipe: Any, step: int, _timestep: Any, _tensors: dict) -> dict:
        on_step(index, step)
        return {}

    return callback
