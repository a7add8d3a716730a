"""The libraries' own chatter, quieted: diffusers' and transformers' progress bars and notices would drown a report;
and teacli's own log lines, drawn on a console."""

from __future__ import annotations

from typing import Any

from ..signals import IMPORT_CHATTER


def quiet_libraries(verbose: bool = False) -> None:
    """No progress bars from diffusers or transformers; their notices too unless `verbose`."""
    import logging

    import diffusers
    import transformers

    for name in IMPORT_CHATTER:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.ERROR)

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if verbose:
        diffusers.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()


def log_to_console(console: Any, verbose: bool, libraries: bool = True) -> None:
    """teacli's own lines through Rich on `console` (the CLI's stderr); the libraries' chatter only when verbose.
    `libraries=False` leaves diffusers and transformers unimported (a command that never runs a model)."""
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("teacli")
    logger.handlers[:] = [RichHandler(console=console, show_time=False, show_path=False, markup=False)]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    if libraries:
        quiet_libraries(verbose)
