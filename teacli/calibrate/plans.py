"""Measuring a plan's gap costs: the final picture's error for every gap of the schedule.

For every pair of steps i < j (at most `max_gap` steps between them), one generation computes every
step except those strictly between i and j, which reuse step i's residual; a second one forecasts
them from steps i-1 and i. Each gap's cost is the mean squared pixel error of the final picture
against the uncached one, averaged over the calibration captions. `teacli.engine.plan.solve` turns the
costs into a plan for any budget.

The steps before the gap are the uncached run's, so they are replayed, not recomputed: a replay hook
outside TeaCache's returns the uncached run's recorded transformer outputs for those calls. A gap
(i, j) then costs about N - i computed calls per branch, less the skipped ones, instead of all N less
the skipped ones: at 28 steps with the defaults, 4,332 calls per caption and branch instead of 7,862.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook

from ..engine.apply import DENOISER_COMPONENTS, apply_teacache
from ..engine.plan import FORECAST_GAPS, REACHES, Costs, Plan, PlanError, candidates
from ..generation.runner import GenerationRequest, outputs_of, pipeline_kwargs
from ..models.catalog import Preset

REPLAY_HOOK = "teacli_replay"
# A plan's config for every denoiser: what apply_teacache takes.
MakePlanConfig = Callable[[Plan], Any]


@dataclass(frozen=True)
class GapRun:
    """One calibration generation: the gap (i, j) and whether it forecasts."""

    start: int
    end: int
    forecast: bool

    def plan(self, steps: int) -> Plan:
        computed = [s for s in range(steps) if not self.start < s < self.end]
        return Plan(steps, tuple(computed), (self.start,) if self.forecast else (), source="calibration")

    @property
    def replayed_steps(self) -> int:
        """Steps before the gap taken from the uncached run: a forecast needs step start - 1 computed too."""
        return max(0, self.start - 1) if self.forecast else self.start


def gap_runs(steps: int, max_gap: int, forecast_gap: int = 0) -> list[GapRun]:
    """Every gap of 1..max_gap skipped steps with plain reuse, and of 1..forecast_gap forecast (from step 1)."""
    runs = []
    for start in range(steps - 2):
        for end in range(start + 2, min(steps, start + max(max_gap, forecast_gap) + 2)):
            if end - start - 1 <= max_gap:
                runs.append(GapRun(start, end, False))
            if start >= 1 and end - start - 1 <= forecast_gap:
                runs.append(GapRun(start, end, True))
    return runs


def calibration_calls(steps: int, max_gap: int, forecast_gap: int = 0) -> int:
    """Computed transformer calls per caption and CFG branch, the uncached run included."""
    runs = gap_runs(steps, max_gap, forecast_gap)
    return steps + sum(steps - run.replayed_steps - (run.end - run.start - 1) for run in runs)


class _Replay:
    """Shared by the replay hooks of every denoiser: a call counter over the whole pipeline run."""

    def __init__(self) -> None:
        self.recorded: list[Any] = []
        self.recording = False
        self.replay_calls = 0  # calls to answer from the record in this run
        self.call = 0

    def start(self, *, recording: bool = False, replay_calls: int = 0) -> None:
        self.call = 0
        self.recording = recording
        self.replay_calls = replay_calls
        if recording:
            self.recorded = []


class _ReplayHook(ModelHook):
    def __init__(self, replay: _Replay) -> None:
        super().__init__()
        self.replay = replay

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        replay = self.replay
        index, replay.call = replay.call, replay.call + 1
        if not replay.recording and index < replay.replay_calls:
            return _tree_clone(replay.recorded[index])
        output = self.fn_ref.original_forward(*args, **kwargs)
        if replay.recording:
            replay.recorded.append(_tree_clone(output))
        return output


def _tree_clone(value: Any) -> Any:
    from torch.utils._pytree import tree_map

    return tree_map(lambda item: item.detach().clone() if isinstance(item, torch.Tensor) else item, value)


def _denoisers(pipe: Any) -> list[torch.nn.Module]:
    return [module for name in DENOISER_COMPONENTS if (module := getattr(pipe, name, None)) is not None]


def _pictures(pipe: Any, requests: Sequence[GenerationRequest]) -> torch.Tensor:
    """The requests' outputs as one float tensor in [0, 1] (images or video frames), made in one batch."""
    from ..generation.media import media_tensor

    kwargs = batch_kwargs(pipe, requests)
    result = pipe(**kwargs)
    tensors = []
    for output in outputs_of(pipe, result, _batch_view(requests)):
        tensor = media_tensor(output)
        if tensor is None:
            raise PlanError("a plan is calibrated on pictures: this pipeline makes sound, which has no pixel error")
        tensors.append(tensor.float())
    return torch.stack(tensors)


def _batch_view(requests: Sequence[GenerationRequest]) -> GenerationRequest:
    return replace(requests[0], num_images=len(requests))


def batch_kwargs(pipe: Any, requests: Sequence[GenerationRequest]) -> dict[str, Any]:
    """One pipeline call for captions that differ only in prompt and seed: prompts and generators as lists."""
    kwargs = pipeline_kwargs(pipe, requests[0])
    if len(requests) == 1:
        return kwargs
    kwargs["prompt"] = [request.prompt for request in requests]
    if "negative_prompt" in kwargs:
        kwargs["negative_prompt"] = [kwargs["negative_prompt"]] * len(requests)
    kwargs["generator"] = [torch.Generator("cpu").manual_seed(request.seed) for request in requests]
    return kwargs


def measure_costs(
    pipe: Any,
    requests: Sequence[GenerationRequest],
    make_config: MakePlanConfig,
    *,
    max_gap: int,
    forecast_gap: int = 0,
    batch: int = 1,
    on_run: Callable[[], None] = lambda: None,
) -> Costs:
    """Every gap's final-picture error (mean squared, pixels in [0, 1]), averaged over the requests.

    The requests must share their steps and settings; they run `batch` at a time. on_run hears of every
    generation made (the uncached one of each batch included)."""
    steps = requests[0].steps
    if any(request.steps != steps for request in requests):
        raise PlanError("every calibration caption must use the same number of steps")
    if not 1 <= max_gap <= steps - 2:
        raise PlanError(f"max_gap must be between 1 and {steps - 2} at {steps} steps, got {max_gap}", field="max_gap")
    if not 0 <= forecast_gap <= steps - 2:
        raise PlanError(
            f"forecast_gap must be between 0 and {steps - 2} at {steps} steps, got {forecast_gap}", field="forecast_gap"
        )
    runs = gap_runs(steps, max_gap, forecast_gap)
    totals = {run: 0.0 for run in runs}
    replay = _Replay()
    for group in _groups(requests, batch):
        replay.start(recording=True)
        with _replaying(pipe, replay):
            reference = _pictures(pipe, group)
        on_run()
        calls_per_step = len(replay.recorded) // steps
        if calls_per_step * steps != len(replay.recorded):
            raise PlanError(
                f"the pipeline made {len(replay.recorded)} transformer calls in {steps} steps, not a whole "
                "number per step: a plan cannot be calibrated on it"
            )
        for run in runs:
            replayed = run.replayed_steps * calls_per_step
            totals[run] += _squared_error(pipe, make_config(run.plan(steps)), group, reference, replay, replayed)
            on_run()
    count = len(requests)
    reuse = [[None] * steps for _ in range(steps)]
    ahead = [[None] * steps for _ in range(steps)] if forecast_gap else None
    for run, total in totals.items():
        table = ahead if run.forecast else reuse
        table[run.start][run.end] = total / count
    return Costs(steps, tuple(map(tuple, reuse)), None if ahead is None else tuple(map(tuple, ahead)))


def _groups(requests: Sequence[GenerationRequest], batch: int) -> list[Sequence[GenerationRequest]]:
    """The requests `batch` at a time, as the pipeline runs them."""
    return [requests[start : start + batch] for start in range(0, len(requests), batch)]


def _squared_error(
    pipe: Any,
    config: Any,
    group: Sequence[GenerationRequest],
    reference: torch.Tensor,
    replay: _Replay | None = None,
    replayed_calls: int = 0,
) -> float:
    """The group's pictures made with `config` applied, each one's mean squared error against its reference,
    summed. With `replay`, the first `replayed_calls` transformer calls are answered from its record, by a hook
    outside TeaCache's: replayed calls never reach TeaCache."""
    handle = apply_teacache(pipe, config)
    try:
        if replay is None:
            pictures = _pictures(pipe, group)
        else:
            replay.start(replay_calls=replayed_calls)
            with _replaying(pipe, replay):
                pictures = _pictures(pipe, group)
    finally:
        handle.remove()
    return float((pictures - reference).pow(2).flatten(1).mean(1).sum())


@contextmanager
def _replaying(pipe: Any, replay: _Replay) -> Iterator[None]:
    """The replay hook on every denoiser, outermost, for one generation."""
    registries = []
    try:
        for module in _denoisers(pipe):
            registry = HookRegistry.check_if_exists_or_initialize(module)
            registry.register_hook(_ReplayHook(replay), REPLAY_HOOK)
            registries.append(registry)
        yield
    finally:
        for registry in registries:
            registry.remove_hook(REPLAY_HOOK, recurse=False)


@dataclass(frozen=True)
class Chosen:
    """A budget's plan as calibration chose it, with its measured error and the candidates it beat."""

    plan: Plan
    error: float  # mean squared pixel error of the final pictures on the calibration captions
    tried: int


def choose_plans(
    pipe: Any,
    requests: Sequence[GenerationRequest],
    make_config: MakePlanConfig,
    costs: Costs | None,
    budgets: Sequence[int],
    *,
    batch: int = 1,
    on_run: Callable[[], None] = lambda: None,
) -> dict[int, Chosen]:
    """For each budget, every candidate plan (teacli.engine.plan.candidates) run on the calibration captions; the
    one whose final pictures are closest to the uncached ones is kept. The gap costs only rank paths one gap
    at a time; these runs see how errors add up along a whole path, forecasts included."""
    steps = requests[0].steps
    groups = _groups(requests, batch)
    references = []
    for group in groups:
        references.append(_pictures(pipe, group))
        on_run()
    chosen: dict[int, Chosen] = {}
    for budget in budgets:
        best: tuple[float, Plan] | None = None
        plans = candidates(costs, steps, budget)
        for plan in plans:
            total = 0.0
            for group, reference in zip(groups, references):
                total += _squared_error(pipe, make_config(plan), group, reference)
                on_run()
            error = total / len(requests)
            if best is None or error < best[0]:
                best = (error, plan)
        chosen[budget] = Chosen(best[1], best[0], len(plans))
    return chosen


# The default budget a calibration writes: the fewest computed steps whose final pictures stay this close to
# the uncached ones on the calibration captions (PSNR, dB): far past what an eye tells apart.
DEFAULT_TARGET_DB = 40.0


def psnr_of(mse: float) -> float:
    """PSNR in dB of pixels in [0, 1] from their mean squared error (capped at 100 for identical pictures)."""
    return 100.0 if mse <= 1e-10 else -10.0 * math.log10(mse)


@dataclass(frozen=True)
class PlanCalibration:
    """What `teacli calibrate --plan` learned at one step count: a plan per budget and how it was made."""

    steps: int
    captions: int
    max_gap: int
    forecast_gap: int
    chosen: dict[int, Chosen]
    calls: int  # computed transformer calls per caption and CFG branch, all runs together
    costs: Costs | None = None  # the measured gap costs (Costs.to_dict for JSON; solve() plans other budgets)

    def default_budget(self, target_db: float = DEFAULT_TARGET_DB) -> int:
        """The fewest computed steps whose pictures reached target_db on the calibration captions."""
        good = [budget for budget, chosen in self.chosen.items() if psnr_of(chosen.error) >= target_db]
        return min(good) if good else max(self.chosen)

    def block(self) -> dict[str, Any]:
        """The preset's record of this calibration (under calibration.plans.STEPS)."""
        return {
            "captions": self.captions,
            "max_gap": self.max_gap,
            "forecast_gap": self.forecast_gap,
            "calls_per_caption": self.calls,
            "psnr": {budget: round(psnr_of(chosen.error), 2) for budget, chosen in self.chosen.items()},
        }

    def apply(self, preset: Preset) -> Preset:
        """`preset` with these plans for this step count (others kept) and, at its default step count, a default
        budget where it had none."""
        plans = {**preset.plans, self.steps: {budget: c.plan.timeline() for budget, c in sorted(self.chosen.items())}}
        calibration = dict(preset.calibration)
        made = dict(calibration.get("plans") or {})
        made[self.steps] = self.block()
        calibration["plans"] = made
        budget = preset.budget
        if budget is None and self.steps == preset.defaults.steps:
            budget = self.default_budget()
        return replace(preset, plans=plans, calibration=calibration, budget=budget)


def run_plan_calibration(
    pipe: Any,
    requests: Sequence[GenerationRequest],
    make_config: MakePlanConfig,
    *,
    max_gap: int,
    forecast_gap: int,
    budgets: Sequence[int],
    batch: int = 1,
    on_run: Callable[[], None] = lambda: None,
) -> PlanCalibration:
    """Gap costs (measure_costs), then the best candidate plan per budget (choose_plans)."""
    costs = measure_costs(
        pipe, requests, make_config, max_gap=max_gap, forecast_gap=forecast_gap, batch=batch, on_run=on_run
    )
    chosen = choose_plans(pipe, requests, make_config, costs, budgets, batch=batch, on_run=on_run)
    steps = requests[0].steps
    validation = sum(c.tried * budget for budget, c in chosen.items()) + steps
    return PlanCalibration(
        steps=steps,
        captions=len(requests),
        max_gap=max_gap,
        forecast_gap=forecast_gap,
        chosen=chosen,
        calls=calibration_calls(steps, max_gap, forecast_gap) + validation,
        costs=costs,
    )


def planned_runs(steps: int, captions: int, batch: int, max_gap: int, forecast_gap: int, budgets: Sequence[int]) -> int:
    """How many generations run_plan_calibration makes (for a progress bar): an upper bound on the validation."""
    groups = -(-captions // batch)
    candidates_most = len(REACHES) * len(FORECAST_GAPS) + len(FORECAST_GAPS)
    return groups * (1 + len(gap_runs(steps, max_gap, forecast_gap)) + 1 + candidates_most * len(budgets))
