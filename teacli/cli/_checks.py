"""The settings warnings (teacli.generation.checks) on the command line: printed, or refused with --strict."""

from __future__ import annotations

from typing import Any

from ..generation.checks import check_settings as _check_settings
from ..generation.checks import schedule_warning, thresh_warning
from ..generation.policy import Policy, choose_policy
from ..models.catalog import Preset
from ._session import RichProgress

__all__ = ["check_settings", "run_policy", "schedule_warning", "thresh_warning"]


def run_policy(preset: Preset, steps: int, **asked: Any) -> Policy:
    """The policy a run uses (teacli.generation.policy.choose_policy); a refusal is a PolicyError, one line."""
    return choose_policy(preset, steps, **asked)


def check_settings(warnings: list[str | None], strict: bool) -> None:
    """Print each warning as one line on stderr, or with --strict refuse the first one."""
    _check_settings(warnings, strict, RichProgress())
