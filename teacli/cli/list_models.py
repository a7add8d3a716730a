"""teacli list-models: the presets, and whether each one works with the installed diffusers."""

from __future__ import annotations

from typing import Any

COEFFICIENT_STYLES = {"published": "green", "borrowed": "yellow", "calibrated": "cyan"}


def list_models() -> None:
    """Show the supported models (presets), where their coefficients come from, and test models apart."""
    import diffusers
    from rich.console import Console
    from rich.table import Table

    from ..catalog import builtin_presets
    from ..registry import supported_classes
    from ._app import quiet_libraries

    quiet_libraries()
    presets = sorted(builtin_presets().values(), key=lambda p: (p.is_test_model, p.transformer, p.name))
    table = Table(
        title=f"teacli presets (diffusers {diffusers.__version__})",
        caption="coefficients: published (fitted for the model), borrowed (from a similar model: "
        "teacli calibrate fits your own), calibrated. test: a tiny offline pipeline for tests, not for pictures",
    )
    for column in ("name", "model", "pipeline", "transformer", "coefficients", "thresh", "available"):
        table.add_column(column, overflow="fold")
    for preset in presets:
        kind = preset.coefficients_kind
        table.add_row(
            f"{preset.name} [dim](test)[/]" if preset.is_test_model else preset.name,
            preset.model,
            preset.pipeline,
            preset.transformer,
            f"[{COEFFICIENT_STYLES[kind]}]{kind}[/]",
            f"{preset.thresh:g}",
            availability(preset, diffusers),
            end_section=_last_real_model(preset, presets),
        )
    console = Console()
    console.print(table)
    console.print(f"{len(supported_classes())} transformer classes have an extractor: {', '.join(supported_classes())}")


def availability(preset: Any, diffusers: Any) -> str:
    from ..registry import has_extractor

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
