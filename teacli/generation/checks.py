"""Settings that run but make caching useless or harmful: a warning before generating, or a refusal when strict.
Also a prompt in words its model does not know (a warning only: caching is not the matter)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import TeacliError
from ..models.catalog import Preset, builtin_presets

if TYPE_CHECKING:
    from .policy import Policy
    from .preparation import CacheOptions
    from .progress import Progress

# The first and last steps are always computed, so a schedule this short has (almost) nothing to cache.
SHORT_SCHEDULE_STEPS = 4
# Above this the accumulated distance allowed before recomputing exceeds the rescaled change of a whole schedule on
# most models; published thresholds stay well below it.
HIGH_THRESH = 1.0
# The options that shape TeaCache's rule (CacheOptions fields) and how the command line spells them.
# The most unknown words a warning names; the rest are counted.
SHOWN_WORDS = 6
RULE_OPTIONS = {
    "start": "--start",
    "end": "--end",
    "ret_steps": "--ret-steps",
    "max_cached_in_row": "--max-cached-in-row",
}


class SettingsError(TeacliError, ValueError):
    """Settings that cannot be used together, or a warning refused because the run is strict."""


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


def steps_note(preset: Preset, steps: int) -> str | None:
    """A note when a calibrated preset runs at another step count than it was fitted at: rel_l1 per
    step grows as steps get fewer, so the fit (and its clamp range) describes other distances."""
    calibrated = preset.calibration.get("steps")
    if preset.coefficients_kind != "calibrated" or not isinstance(calibrated, int) or calibrated == steps:
        return None  # (calibrate.coefficients.CALIBRATED: calibrate sits above generation)
    return (
        f"coefficients calibrated at {calibrated} steps, generating with {steps}: for the best fit, "
        f"calibrate with --steps {steps}"
    )


def vocabulary_warning(preset: Preset, prompts: str | Sequence[str]) -> str | None:
    """The words of the prompts a model with a vocabulary (a preset's `vocabulary`) does not know: it ignores them,
    so a prompt of other words gives a picture that is not what was asked for."""
    vocabulary = preset.vocabulary
    if vocabulary is None:
        return None
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    unknown = list(dict.fromkeys(word for text in texts for word in vocabulary.unknown(text)))
    if not unknown:
        return None
    listed = ", ".join(f"'{word}'" for word in unknown[:SHOWN_WORDS])
    more = f" and {len(unknown) - SHOWN_WORDS} more" if len(unknown) > SHOWN_WORDS else ""
    verb = "is" if len(unknown) == 1 else "are"
    return f'{preset.name} knows only {vocabulary.about}: {listed}{more} {verb} ignored; try "{vocabulary.example}"'


def check_rule_options(policy: Policy, caching: CacheOptions) -> None:
    """start, end, ret_steps and max_cached_in_row shape TeaCache's rule; a plan computes exactly its steps, so
    giving them with one would be silently ignored: refuse instead."""
    given = [name for name in RULE_OPTIONS if name in caching.given()]
    if policy.plan is not None and given:
        raise SettingsError(
            f"{given[0]} shapes TeaCache's rule, but this run follows a plan ({policy.label}) that computes exactly "
            "its steps; drop it, or use thresh (or policy teacache)",
            field=(given[0], "thresh", "policy"),
        )


def chosen_warning(policy: Policy, preset: Preset) -> str | None:
    """A threshold far above the tested ones; a budget that caches (almost) nothing needs no warning."""
    return thresh_warning(policy.thresh, preset) if policy.plan is None else None


def check_settings(warnings: list[str | None], strict: bool, progress: Progress) -> None:
    """Tell `progress` each warning, or when strict refuse the first one."""
    for warning in filter(None, warnings):
        if strict:
            raise SettingsError(f"{warning} (refused because of --strict)", field="strict")
        progress.warning(warning)
