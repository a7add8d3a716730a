"""teacli list-models: the presets (all, or those matching a word), as a table or JSON."""

from __future__ import annotations

import typer


def list_models(
    match: str | None = typer.Argument(None, help="Only presets whose name, family, class or model id has this"),
    json: bool = typer.Option(False, "--json", help="The presets as JSON on stdout, every field"),
    wide: bool = typer.Option(False, "--wide", help="Every column, however narrow the terminal"),
) -> None:
    """Show the supported models (presets), where their coefficients come from, and test models apart."""
    import sys

    from ..models.listing import list_presets
    from ._app import CLIError, ReportConsole, print_json, stderr

    if sys.stdout is None:  # the table is the whole answer: say so rather than exit 0 having shown nothing
        raise CLIError("list-models prints its table on stdout, which is closed; run it without closing stdout")
    listing = list_presets(match, stderr)  # no torch imported; a preset folder's skipped files told on stderr
    print_json(listing.to_dict()) if json else listing.render(ReportConsole(), wide)
