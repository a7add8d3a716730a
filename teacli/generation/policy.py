"""Which cache policy a run uses: TeaCache's own rule at a threshold, or a schedule for a budget of steps.

- `teacache`: TeaCache's rule (accumulated rescaled change against `thresh`), exactly as the reference
  implementation decides. `--thresh` asks for it.
- `teacache-plan`: the schedule `teacli calibrate --plan` chose for this many computed steps at this step
  count, from the final pictures' error (teacli.engine.plan). `--budget` asks for it where the preset has one.
- `teacache-uniform`: the budget's steps spread evenly, for step counts no plan was calibrated at.

With neither `--thresh` nor `--budget`, a preset with a calibrated plan for the run's step count and a
default `budget` runs that plan; any other preset runs TeaCache's rule at its own threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import limits
from ..engine.plan import UNIFORM_SOURCE, Plan, PlanError, check_budget, from_timeline, uniform
from ..errors import TeacliError
from ..models.catalog import Preset

RULE, PLANNED, UNIFORM = "teacache", "teacache-plan", "teacache-uniform"
POLICIES = ("auto", RULE, "plan", "uniform")


class PolicyError(TeacliError, ValueError):
    """A policy, budget, threshold or coefficients that cannot be used (together); the message says what to give
    instead and `field` names the setting."""


# How coefficients are written where a user gives them (a preset writes them as a list of the same numbers).
COEFFICIENTS_FORM = "2-7 comma-separated numbers, highest power first, e.g. 498.65,-283.78,55.86,-3.82,0.264"


def check_policy(policy: str, budget: str | None) -> None:
    """`policy` is one of POLICIES and `budget` reads as steps or a speedup: checked before anything loads."""
    if policy not in POLICIES:
        raise PolicyError(f"policy {limits.clip(policy)} is not one of {', '.join(POLICIES)}", field="policy")
    if budget is not None:
        text = budget.strip().lower()
        try:  # a whole number of steps, or a speedup such as 2.5x
            value = float(text[:-1]) if text.endswith("x") else float(int(text))
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 1:
            raise PolicyError(
                f"budget {limits.clip(budget) or repr(budget)} is neither a number of computed steps (e.g. 10) "
                "nor a speedup (e.g. 3x)",
                field="budget",
            )


def check_thresh(value: float) -> float:
    """TeaCache's threshold: a finite number from 0 (0 disables caching), within its range (teacli.limits)."""
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise PolicyError(f"thresh must be a finite number >= 0 (0 disables caching), got {value}", field="thresh")
    return limits.check("thresh", value, PolicyError)


def parse_thresholds(text: str) -> list[float]:
    """Thresholds written as "0.1,0.2,0.4", each checked."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise PolicyError(
                f"thresh takes comma-separated numbers like 0.1,0.2,0.4; '{part.strip()}' is not a number",
                field="thresh",
            ) from None
        values.append(check_thresh(value))
    return values


def parse_coefficients(text: str | None) -> tuple[float, ...] | None:
    """Coefficients written as "a,b,c,d,e": the polynomial TeaCache rescales rel_l1 with, as presets write it."""
    if text is None:
        return None
    parts = text.split(",")
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise PolicyError(
                f"coefficients takes {COEFFICIENTS_FORM}; '{part.strip()}' is not a number", field="coefficients"
            ) from None
    if not 2 <= len(values) <= 7:
        raise PolicyError(f"coefficients takes {COEFFICIENTS_FORM}; got {len(values)} number(s)", field="coefficients")
    bad = next((part.strip() for part, value in zip(parts, values) if not math.isfinite(value)), None)
    if bad is not None:
        raise PolicyError(f"coefficients takes {COEFFICIENTS_FORM}; '{bad}' is not finite", field="coefficients")
    return tuple(values)


def policy_of(plan: Plan | None) -> str:
    """The policy name of a TeaCacheConfig's plan (None: TeaCache's rule)."""
    if plan is None:
        return RULE
    return UNIFORM if plan.source == UNIFORM_SOURCE else PLANNED


@dataclass(frozen=True)
class Policy:
    """What decides which calls are computed in one run, and where its data came from."""

    name: str  # RULE, PLANNED or UNIFORM
    source: str  # where its data came from: the coefficients' or the plan's origin
    thresh: float | None = None  # RULE only
    plan: Plan | None = None  # PLANNED and UNIFORM

    @property
    def budget(self) -> int | None:
        return None if self.plan is None else self.plan.budget

    @property
    def label(self) -> str:
        """The row name in bench tables: teacache@0.2, teacache-plan@10."""
        return f"{self.name}@{self.thresh:g}" if self.plan is None else f"{self.name}@{self.plan.budget}"

    def describe(self) -> str:
        if self.plan is None:
            return f"TeaCache's rule at thresh {self.thresh:g}"
        kind = "calibrated plan" if self.name == PLANNED else "uniform stride"
        return f"{kind}: {self.plan.budget} of {self.plan.steps} steps computed"

    def to_dict(self) -> dict:
        return {
            "policy": self.name,
            "policy_source": self.source,
            "thresh": self.thresh,
            "budget": self.budget,
            "plan": None if self.plan is None else self.plan.timeline(),
        }


def parse_budget(text: str | int, steps: int) -> int:
    """A budget as computed steps: '10' (steps of `steps`) or '2.5x' (a speedup: steps / 2.5, rounded)."""
    value = str(text).strip().lower()
    try:
        if value.endswith("x"):
            speedup = float(value[:-1])
            if not math.isfinite(speedup) or speedup < 1:
                raise ValueError
            budget = max(2, round(steps / speedup))
        else:
            budget = int(value)
    except ValueError:
        raise PolicyError(
            f"budget {str(text)[:40]!r} is neither a number of computed steps (e.g. 10) nor a speedup of at least 1 "
            "(e.g. 2.5x)"
        ) from None
    try:
        return check_budget(budget, steps)
    except PlanError as error:
        raise PolicyError(str(error)) from None


def calibrated_plan(preset: Preset, steps: int, budget: int) -> Plan | None:
    """The plan `teacli calibrate --plan` stored for this budget at this step count, if any."""
    timeline = preset.plans.get(steps, {}).get(budget)
    if timeline is None:
        return None
    return from_timeline(timeline, source=plan_source(preset, steps))


def plan_source(preset: Preset, steps: int) -> str:
    """Where a preset's plans at `steps` come from, with the calibration record's caption count where it has one
    (the record is free data: a hand-written preset may hold anything there, or nothing)."""
    made = preset.calibration.get("plans")  # Preset.calibration is always a dict
    detail = made.get(steps) if isinstance(made, dict) else None
    captions = detail.get("captions") if isinstance(detail, dict) else None
    on = f" on {captions} captions" if captions else ""
    return f"calibrated by teacli calibrate --plan{on} at {steps} steps ({preset.name})"


def choose_policy(
    preset: Preset,
    steps: int,
    *,
    policy: str = "auto",
    thresh: float | None = None,
    budget: str | int | None = None,
) -> Policy:
    """The policy a run uses: the one asked for, else the preset's default (see the module docstring)."""
    if policy not in POLICIES:
        raise PolicyError(f"policy {policy!r} is not one of {', '.join(POLICIES)}")
    if thresh is not None and budget is not None:
        raise PolicyError("give --thresh (TeaCache's rule) or --budget (a schedule of computed steps), not both")
    if policy == RULE and budget is not None:
        raise PolicyError("--policy teacache decides by threshold; drop --budget or use --policy plan")
    if policy in ("plan", "uniform") and thresh is not None:
        raise PolicyError(f"--policy {policy} runs a schedule for a budget; drop --thresh or use --policy teacache")
    rule = Policy(RULE, preset.coefficients_source, thresh=preset.thresh if thresh is None else thresh)
    if policy == RULE or thresh is not None:
        return rule
    if budget is None:
        if policy == "auto" and (preset.budget is None or not preset.plans.get(steps)):
            return rule
        budget = preset.budget if preset.budget is not None else max(2, round(steps / 3))
    budget = parse_budget(budget, steps)
    if policy != "uniform":
        plan = calibrated_plan(preset, steps, budget)
        if plan is not None:
            return Policy(PLANNED, plan.source, plan=plan)
        if policy == "plan":
            calibrated = sorted(preset.plans.get(steps, {}))
            have = (
                f"it has plans for {calibrated[0]}-{calibrated[-1]} computed steps"
                if calibrated
                else f"steps with plans: {', '.join(map(str, sorted(preset.plans))) or 'none'}"
            )
            raise PolicyError(
                f"{preset.name} has no calibrated plan for {budget} of {steps} steps ({have}); "
                f"run teacli calibrate --plan --steps {steps}, or use --policy uniform"
            )
    plan = uniform(steps, budget)
    return Policy(UNIFORM, plan.source, plan=plan)
