"""Planned schedules: which steps to compute, chosen offline from the final picture's error.

TeaCache's rule decides online from the step-to-step change of the modulated input. That change is
largest late in a flow-matching schedule, so the rule spends its calls there and leaves long gaps
early, where a reused residual's error then runs through every remaining step. A plan instead comes
from measured final-picture error: `teacli calibrate --plan` records, for every pair of steps i < j,
how far the final picture moves when the steps strictly between them reuse step i's residual
(`Costs.reuse`), and how far when they forecast it from steps i-1 and i (`Costs.forecast`). For a
budget of K computed steps, `solve` picks the path 0 -> N-1 through K steps whose worst gap costs
least (ties: the smaller total), each gap reusing or forecasting, whichever costs less (the idea of
LeMiCa, arXiv 2511.00090, with forecasting added).

A forecast is first order in the timestep from the two latest computed residuals; it pays across
short gaps and hurts across long ones, which the measured costs tell apart. A plan only forecasts
after a step whose previous step was computed too, the case its cost was measured on.

Everything here is pure: the hook asks `Plan.computes(step)` and `Plan.forecasts_after(step)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import TeacliError

MIN_BUDGET = 2  # the first and the last step are always computed


class PlanError(TeacliError, ValueError):
    """A plan or a budget that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Plan:
    """The steps of an N-step schedule to compute; every other step reuses (or forecasts) a residual.

    Attributes:
        steps: the schedule length the plan was made for; a run of another length is refused.
        computed: sorted step indices, always holding 0 and steps - 1.
        forecast: computed steps after which the gap forecasts the residual instead of reusing it, from
            this step's residual and the previous computed step's (so never the first step).
        source: where the plan comes from, for reports and metadata.
    """

    steps: int
    computed: tuple[int, ...]
    forecast: tuple[int, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < MIN_BUDGET:
            raise PlanError(f"a plan needs steps, an integer >= {MIN_BUDGET}, got {self.steps!r}")
        computed = _indices("computed", self.computed, self.steps)
        if not computed or computed[0] != 0 or computed[-1] != self.steps - 1:
            raise PlanError(f"a plan must compute the first and last step (0 and {self.steps - 1}), got {computed}")
        forecast = _indices("forecast", self.forecast, self.steps)
        chosen = set(computed)
        for step in forecast:
            if step not in chosen or step == computed[0]:
                raise PlanError(
                    f"a plan forecasts after a computed step that follows another computed one; {step} is not one"
                )
        object.__setattr__(self, "computed", computed)
        object.__setattr__(self, "forecast", forecast)

    @property
    def budget(self) -> int:
        """Computed steps (each step computes all of its CFG branches)."""
        return len(self.computed)

    def computes(self, step: int) -> bool:
        return step in self.computed

    def forecasts_after(self, step: int) -> bool:
        """Whether the gap after computed `step` forecasts the residual (else plain reuse)."""
        return step in self.forecast

    def timeline(self) -> str:
        """One character per step: C computed, f forecast, . reused."""
        marks = []
        mode = "."
        for step in range(self.steps):
            if self.computes(step):
                marks.append("C")
                mode = "f" if self.forecasts_after(step) else "."
            else:
                marks.append(mode)
        return "".join(marks)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "computed": list(self.computed), "forecast": list(self.forecast)}


def _indices(name: str, values: Sequence[int], steps: int) -> tuple[int, ...]:
    try:
        items = list(values)
    except TypeError:
        raise PlanError(f"a plan's {name} must be a list of step indices, got {values!r}") from None
    for value in items:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < steps:
            raise PlanError(f"a plan's {name} must hold step indices 0..{steps - 1}, got {value!r}")
    return tuple(sorted(set(items)))


@dataclass(frozen=True)
class Costs:
    """Measured final-picture errors for the gaps of an N-step schedule (mean squared error, any scale).

    reuse[i][j]: steps i and j computed, the steps between reuse step i's residual, all others computed.
    forecast[i][j]: the same, the steps between forecasting from steps i-1 and i (None where not measured).
    Entries with j <= i + 1 are unused (a gap of no steps costs nothing).
    """

    steps: int
    reuse: tuple[tuple[float | None, ...], ...]
    forecast: tuple[tuple[float | None, ...], ...] | None = None

    def __post_init__(self) -> None:
        for name in ("reuse", "forecast"):
            table = getattr(self, name)
            if table is None:
                continue
            if len(table) != self.steps or any(len(row) != self.steps for row in table):
                raise PlanError(f"plan costs: '{name}' must be a {self.steps}x{self.steps} table")
            for row in table:
                for value in row:
                    if value is None:
                        continue
                    number = not isinstance(value, bool) and isinstance(value, (int, float))
                    if not number or not math.isfinite(value) or value < 0:
                        raise PlanError(f"plan costs: '{name}' holds {value!r}; costs are finite numbers >= 0")

    def gap(self, i: int, j: int, forecast: bool) -> float | None:
        if j == i + 1:
            return 0.0
        table = self.forecast if forecast else self.reuse
        if table is None:
            return None
        return table[i][j]

    @property
    def max_gap(self) -> int:
        """The longest gap measured (j - i - 1 steps skipped)."""
        pairs = ((i, j) for i in range(self.steps) for j in range(i + 2, self.steps))
        return max((j - i - 1 for i, j in pairs if self.reuse[i][j] is not None), default=0)

    def to_dict(self) -> dict:
        """The banded form a preset stores: row i lists the costs of skipping 1, 2, ... steps after step i."""
        data = {"reuse": self._bands(self.reuse)}
        if self.forecast is not None:
            data["forecast"] = self._bands(self.forecast)
        return data

    def _bands(self, table: tuple[tuple[float | None, ...], ...]) -> list[list[float]]:
        rows = []
        for i in range(self.steps - 2):
            row = []
            for j in range(i + 2, self.steps):
                if table[i][j] is None:
                    break
                row.append(float(f"{table[i][j]:.4g}"))
            rows.append(row)
        while rows and not rows[-1]:
            rows.pop()
        return rows

    @classmethod
    def from_dict(cls, steps: int, data: dict) -> Costs:
        """Costs from to_dict's banded form; raises PlanError naming what is malformed."""
        if not isinstance(data, dict) or "reuse" not in data:
            raise PlanError("plan costs need a 'reuse' table (teacli calibrate --plan writes it)")
        unknown = sorted(str(key) for key in data if key not in ("steps", "reuse", "forecast"))
        if unknown:
            raise PlanError(f"plan costs: unknown field {unknown[0]!r}; known: steps, reuse, forecast")
        if data.get("steps", steps) != steps:
            raise PlanError(f"plan costs were measured at {data['steps']!r} steps, not {steps}")
        tables = {name: cls._table(steps, name, data[name]) for name in ("reuse", "forecast") if data.get(name)}
        if "reuse" not in tables:
            raise PlanError("plan costs: 'reuse' is empty")
        return cls(steps, tables["reuse"], tables.get("forecast"))

    @staticmethod
    def _table(steps: int, name: str, rows: object) -> tuple[tuple[float | None, ...], ...]:
        if not isinstance(rows, list) or len(rows) > steps - 2 or not all(isinstance(row, list) for row in rows):
            raise PlanError(f"plan costs: '{name}' must be a list of at most {steps - 2} rows of numbers")
        table = [[None] * steps for _ in range(steps)]
        for i, row in enumerate(rows):
            if len(row) > steps - 2 - i:
                raise PlanError(f"plan costs: '{name}' row {i} has {len(row)} gaps; step {i} has {steps - 2 - i}")
            for offset, value in enumerate(row):
                table[i][i + 2 + offset] = value
        return tuple(tuple(row) for row in table)


def solve(costs: Costs, budget: int, *, reach: int = 1, source: str = "") -> Plan:
    """The K-step path 0 -> N-1 whose worst gap error is least (ties: the smaller sum), each gap reusing or
    forecasting, whichever was measured to cost less.

    A gap may forecast only when the computed step before it follows the previous computed step within
    `reach` steps (the forecast's slope comes from those two; its cost was measured with them adjacent,
    so a larger reach trusts that measurement further); 0 never forecasts. Dynamic programming over
    (step, steps used, distance from the previous computed step)."""
    steps = costs.steps
    budget = check_budget(budget, steps)
    if budget == steps:
        return Plan(steps, tuple(range(steps)), source=source)
    far = reach + 1  # "no forecast from here": the first step, or a previous step further than reach
    # best[(node, used, distance)] = ((worst, total), previous key, whether the gap into node forecasts)
    best: dict[tuple[int, int, int], tuple[tuple[float, float], tuple | None, bool]] = {
        (0, 1, far): ((0.0, 0.0), None, False)
    }
    for node in range(steps):
        for used in range(1, budget):
            for distance in range(1, far + 1):
                key = (node, used, distance)
                if key not in best:
                    continue
                (worst, total), _, _ = best[key]
                remaining = budget - used
                for nxt in range(node + 1, steps - remaining + 2 if remaining > 1 else steps):
                    if remaining == 1 and nxt != steps - 1:
                        continue
                    modes = (False, True) if distance <= reach and nxt > node + 1 else (False,)
                    for forecast in modes:
                        cost = costs.gap(node, nxt, forecast)
                        if cost is None:
                            continue
                        score = (max(worst, cost), total + cost)
                        target = (nxt, used + 1, min(nxt - node, far))
                        if target not in best or score < best[target][0]:
                            best[target] = (score, key, forecast)
    ends = [key for key in best if key[0] == steps - 1 and key[1] == budget]
    if not ends:
        raise PlanError(
            f"no plan of {budget} computed steps fits the measured gaps (at most {costs.max_gap} skipped in a row); "
            "ask for more steps or calibrate with a longer max gap"
        )
    key = min(ends, key=lambda k: best[k][0])
    computed, forecast = [], []
    while key is not None:
        _, previous, forecasting = best[key]
        computed.append(key[0])
        if forecasting:
            forecast.append(previous[0])
        key = previous
    return Plan(steps, tuple(reversed(computed)), tuple(sorted(forecast)), source=source)


def with_forecast(plan: Plan, longest: int) -> Plan:
    """The plan with every gap of at most `longest` skipped steps forecast (after its second computed step)."""
    computed = plan.computed
    forecast = {
        start for previous, start, end in zip(computed, computed[1:], computed[2:]) if 1 < end - start <= longest + 1
    }
    return Plan(plan.steps, computed, tuple(sorted(forecast | set(plan.forecast))), source=plan.source)


REACHES = (0, 1, 2, 3)  # how far apart a forecast's two points may be, as the candidates try it
FORECAST_GAPS = (0, 1, 2, 3)  # gaps forecast after the fact, as the candidates try it


def candidates(costs: Costs | None, steps: int, budget: int) -> list[Plan]:
    """Distinct plans worth trying for a budget: the measured-cost paths for each forecast reach, the uniform
    stride, each also with its short gaps forecast. Calibration keeps the one whose final pictures are best."""
    bases = [uniform(steps, budget)]
    for reach in REACHES if costs is not None else ():
        try:
            bases.append(solve(costs, budget, reach=reach))
        except PlanError:  # gaps longer than calibration measured: only the uniform stride is left
            break
    seen: dict[str, Plan] = {}
    for base in bases:
        for longest in FORECAST_GAPS:
            plan = with_forecast(base, longest) if longest else base
            seen.setdefault(plan.timeline(), plan)
    return list(seen.values())


def from_timeline(timeline: str, *, source: str = "") -> Plan:
    """A plan from its timeline (C computed, f forecast, . reused), as presets store them."""
    if not isinstance(timeline, str) or not timeline or set(timeline) - set("Cf."):
        raise PlanError(f"a plan's timeline is a string of C (computed), f (forecast) and . (reused), got {timeline!r}")
    computed = [step for step, mark in enumerate(timeline) if mark == "C"]
    forecast = []
    for step, mark in enumerate(timeline):
        if mark == "f" and timeline[step - 1] == "C":
            forecast.append(step - 1)
        elif mark == "f" and timeline[step - 1] == ".":
            raise PlanError(f"timeline {timeline!r}: a gap either forecasts (f) or reuses (.), not both")
        elif mark == "." and step > 0 and timeline[step - 1] == "f":
            raise PlanError(f"timeline {timeline!r}: a gap either forecasts (f) or reuses (.), not both")
    plan = Plan(len(timeline), tuple(computed), tuple(forecast), source=source)
    if plan.timeline() != timeline:
        raise PlanError(f"timeline {timeline!r} is not a plan's (it must start and end with C)")
    return plan


UNIFORM_SOURCE = "uniform stride (no calibration)"


def uniform(steps: int, budget: int, *, source: str = UNIFORM_SOURCE) -> Plan:
    """K steps spread evenly over the schedule, first and last included: the plan with no calibration."""
    budget = check_budget(budget, steps)
    if budget == steps:
        return Plan(steps, tuple(range(steps)), source=source)
    computed = sorted({round(k * (steps - 1) / (budget - 1)) for k in range(budget)})
    return Plan(steps, tuple(computed), source=source)


def check_budget(budget: int, steps: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise PlanError(f"a budget is a whole number of computed steps, got {budget!r}")
    if not MIN_BUDGET <= budget <= steps:
        raise PlanError(
            f"a budget of {budget} computed steps does not fit a {steps}-step schedule; give {MIN_BUDGET} to {steps}"
        )
    return budget
