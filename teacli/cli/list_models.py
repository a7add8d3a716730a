"""teacli list-models: the presets, and whether each one works with the installed diffusers."""

from __future__ import annotations


def list_models() -> None:
    """Show the supported models (presets), where their coefficients come from, and test models apart."""
    import sys

    from ..models.library_logs import log_to_console
    from ..signals import import_libraries
    from ._app import CLIError, ReportConsole, stderr

    if sys.stdout is None:  # the table is the whole answer: say so rather than exit 0 having shown nothing
        raise CLIError("list-models prints its table on stdout, which is closed; run it without closing stdout")
    import_libraries()
    log_to_console(stderr, False)  # a preset folder's skipped files are told as warnings
    from ..models.library_logs import quiet_libraries
    from ..models.listing import render_presets

    quiet_libraries()
    render_presets(ReportConsole())
