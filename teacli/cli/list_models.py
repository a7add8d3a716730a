"""teacli list-models: the presets, and whether each one works with the installed diffusers."""

from __future__ import annotations

from typing import Any

COEFFICIENT_STYLES = {"published": "green", "borrowed": "yellow", "calibrated": "cyan"}


def list_models() -> None:
    """Show the supported models (presets), where their coefficients come from, and test models apart."""
    import sys

    from ._app import CLIError, import_libraries, setup_logging

    if sys.stdout is None:  # the table is the whole answer: say so rather than exit 0 having shown nothing
        raise CLIError("list-models prints its table on stdout, which is closed; run it without closing stdout")
    import_libraries()
    setup_logging(False)  # a preset folder's skipped files are told as warnings
    import diffusers
    from rich.table import Table

    from ..engine.registry import supported_classes
    from ..models.catalog import all_presets
    from ..models.library_logs import quiet_libraries
    from ._app import ReportConsole

    quiet_libraries()
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
    console = ReportConsole()
    console.print(table)
    print_user_presets([p for p in presets if p.is_user], console)
    console.print(f"{len(supported_classes())} transformer classes have an extractor: {', '.join(supported_classes())}")


def label(preset: Any) -> str:
    from ..models.catalog import DEFAULT_PRESET

    shown = (("default", preset.name == DEFAULT_PRESET), ("test", preset.is_test_model), ("user", preset.is_user))
    marks = [mark for mark, flag in shown if flag]
    return f"{preset.name} [dim]({', '.join(marks)})[/]" if marks else preset.name


def print_user_presets(presets: list, console: Any) -> None:
    """Which file each user preset comes from, and which built-in it replaces."""
    from rich.markup import escape

    from ..models.catalog import PRESETS_ENV, replaced_builtin, user_config_presets_dir, user_preset_dirs

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
    from ..engine.registry import has_extractor

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
