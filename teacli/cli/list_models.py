"""teacli list-models: the presets, and whether each one works with the installed diffusers."""

from __future__ import annotations


def list_models() -> None:
    """Show the supported models (presets) and whether their extractor is available."""
    import diffusers
    from rich.console import Console
    from rich.table import Table

    from ..catalog import builtin_presets
    from ..registry import has_extractor
    from ._app import quiet_libraries

    quiet_libraries()
    table = Table(title=f"teacli presets (diffusers {diffusers.__version__})")
    for column in ("name", "model", "pipeline", "transformer", "coefficients", "thresh", "available"):
        table.add_column(column, overflow="fold")
    for preset in builtin_presets().values():
        missing = [name for name in (preset.pipeline, preset.transformer) if not hasattr(diffusers, name)]
        if missing:
            available = f"no: {', '.join(missing)} not in this diffusers"
        elif not has_extractor(preset.transformer):
            available = "no: no extractor"
        else:
            available = "yes"
        table.add_row(
            preset.name,
            preset.model,
            preset.pipeline,
            preset.transformer,
            preset.coefficients_source,
            f"{preset.thresh:g}",
            available,
        )
    Console().print(table)
