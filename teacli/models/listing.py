"""The presets as `teacli list-models` shows them: where their coefficients come from, whether the installed
diffusers can run them, and which come from user preset files."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from ..engine.registry import has_extractor, supported_classes
from . import catalog
from .catalog import (
    PRESETS_ENV,
    all_presets,
    replaced_builtin,
    user_config_presets_dir,
    user_preset_dirs,
)

COEFFICIENT_STYLES = {"published": "green", "borrowed": "yellow", "calibrated": "cyan"}


def render_presets(console: Any) -> None:
    """Every preset in a table, real models first and test models apart; then the user presets' files and the
    transformer classes that have an extractor."""
    import diffusers

    presets = sorted(all_presets().values(), key=lambda p: (p.is_test_model, p.transformer, p.name))
    table = Table(
        title=f"teacli presets (diffusers {diffusers.__version__})",
        caption="coefficients: published (fitted for the model), borrowed (from a similar model: "
        "teacli calibrate fits your own), calibrated. test: a tiny offline pipeline for tests, not for pictures. "
        "user: from a user preset file (listed below)",
    )
    for column in ("name", "model", "pipeline", "transformer", "coefficients", "thresh", "available"):
        table.add_column(column, overflow="fold")
    for preset in presets:
        kind = preset.coefficients_kind
        table.add_row(
            label(preset),
            preset.model,
            preset.pipeline,
            preset.transformer,
            f"[{COEFFICIENT_STYLES[kind]}]{kind}[/]",
            f"{preset.thresh:g}",
            availability(preset, diffusers),
            end_section=_last_real_model(preset, presets),
        )
    console.print(table)
    print_user_presets([p for p in presets if p.is_user], console)
    console.print(f"{len(supported_classes())} transformer classes have an extractor: {', '.join(supported_classes())}")


def label(preset: Any) -> str:
    shown = (
        ("default", preset.name == catalog.DEFAULT_PRESET),
        ("test", preset.is_test_model),
        ("user", preset.is_user),
    )
    marks = [mark for mark, flag in shown if flag]
    return f"{preset.name} [dim]({', '.join(marks)})[/]" if marks else preset.name


def print_user_presets(presets: list, console: Any) -> None:
    """Which file each user preset comes from, and which built-in it replaces."""
    if not presets:
        hint = f"preset .yaml files in {user_config_presets_dir()} or a directory named by {PRESETS_ENV}"
        console.print(f"user presets: none ({escape(hint)})", highlight=False, soft_wrap=True)
        return
    searched = ", ".join(str(directory) for directory in user_preset_dirs())
    console.print(
        f"user presets (searched in order, the first one with a name wins: {escape(searched)}):", highlight=False
    )
    for preset in presets:
        replaced = replaced_builtin(preset)
        note = f", replaces the built-in {replaced.name}" if replaced is not None else ", a new preset"
        console.print(f"  {preset.name} (user): {escape(preset.source)}{note}", highlight=False, soft_wrap=True)


def availability(preset: Any, diffusers: Any) -> str:
    missing = [name for name in (preset.pipeline, preset.transformer) if not hasattr(diffusers, name)]
    if missing:
        return f"no: {', '.join(missing)} not in this diffusers"
    if not has_extractor(preset.transformer):
        return "no: no extractor"
    return "yes"


def _last_real_model(preset: Any, presets: list) -> bool:
    """A rule under the last real model, so the test models stand apart."""
    index = presets.index(preset)
    return not preset.is_test_model and index + 1 < len(presets) and presets[index + 1].is_test_model
