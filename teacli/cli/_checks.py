"""Settings that run but make caching useless or harmful: a warning before generating, or a refusal with --strict."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..models.catalog import Preset, builtin_presets

if TYPE_CHECKING:
    from ..generation.policy import Policy
from ._app import CLIError, print_warning

# The first and last steps are always computed, so a schedule this short has (almost) nothing to cache.
SHORT_SCHEDULE_STEPS = 4
# Above this the accumulated distance allowed before recomputing exceeds the rescaled change of a whole schedule on
# most models; published thresholds stay well below it.
HIGH_THRESH = 1.0


def tested_thresholds() -> tuple[float, float]:
    """The lowest and highest threshold among the shipped presets of real models: what has been tried and seen."""
    values = [p.thresh for p in builtin_presets().values() if not p.is_test_model]
    return min(values), max(values)


def schedule_warning(steps: int) -> str | None:
    if steps > SHORT_SCHEDULE_STEPS:
        return None
    return (
        f"{steps} steps: TeaCache always computes the first and last step, so a schedule of {SHORT_SCHEDULE_STEPS} "
        "steps or fewer (distilled models) has almost nothing to cache; expect no speedup"
    )


def thresh_warning(thresh: float, preset: Preset) -> str | None:
    if thresh <= HIGH_THRESH:
        return None
    low, high = tested_thresholds()
    return (
        f"--thresh {thresh:g} is above {HIGH_THRESH:g}: expect visible quality loss; the presets' tested thresholds "
        f"are {low:g}-{high:g} ({preset.name}'s: {preset.thresh:g})"
    )


def run_policy(preset: Preset, steps: int, **asked: Any) -> Policy:
    """The policy a run uses (teacli.generation.policy.choose_policy), a refusal as one line."""
    from ..generation.policy import PolicyError, choose_policy

    try:
        return choose_policy(preset, steps, **asked)
    except PolicyError as error:
        raise CLIError(str(error)) from None


RULE_OPTIONS = {
    "start": "--start",
    "end": "--end",
    "ret_steps": "--ret-steps",
    "max_cached_in_row": "--max-cached-in-row",
}


def check_rule_options(policy: Policy, caching: Any) -> None:
    """--start, --end, --ret-steps and --max-cached-in-row shape TeaCache's rule; a plan computes exactly its
    steps, so giving them with one would be silently ignored: refuse instead."""
    options = caching.given()
    given = [flag for name, flag in RULE_OPTIONS.items() if name in options]
    if policy.plan is not None and given:
        raise CLIError(
            f"{given[0]} shapes TeaCache's rule, but this run follows a plan ({policy.label}) that computes exactly "
            "its steps; drop it, or use --thresh (or --policy teacache)"
        )


def chosen_warning(policy: Policy, preset: Preset) -> str | None:
    """A threshold far above the tested ones; a budget that caches (almost) nothing needs no warning."""
    return thresh_warning(policy.thresh, preset) if policy.plan is None else None


def check_settings(warnings: list[str | None], strict: bool) -> None:
    """Print each warning as one line on stderr, or with --strict refuse the first one."""
    for warning in filter(None, warnings):
        if strict:
            raise CLIError(f"{warning} (refused because of --strict)")
        print_warning(warning)
