"""The libraries' own chatter, quieted: diffusers' and transformers' progress bars and notices would drown a report."""

from __future__ import annotations


def quiet_libraries(verbose: bool = False) -> None:
    """No progress bars from diffusers or transformers; their notices too unless `verbose`."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if not verbose:
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
