"""The teacli command line: generate, bench, calibrate and list-models, each a thin layer over the library.

`main` installs the signal handling first; the commands import torch and diffusers only once their cheap checks
passed (teacli.signals.import_libraries), with signals held meanwhile, so a Ctrl-C or SIGTERM at any moment is one
line and an exit code, never a traceback.
"""

from __future__ import annotations

from typing import Any


def main() -> None:
    from .. import signals

    signals.hold()  # a Ctrl-C now is acted on once the CLI's own modules are imported
    try:
        from ._commands import app

        app(prog_name="teacli")  # the command releases the signals (OneLineErrorsGroup.invoke)
    finally:
        signals.forget_handled_interrupt()


def run() -> None:
    """The console script and `python -m teacli`: main(), then leave at once with its exit code.

    Unloading torch, diffusers and transformers at interpreter exit takes a second or two, during which Python
    has put the default signal handlers back: a Ctrl-C then would kill the process without a word. Every file
    is complete and closed by now, so there is nothing left for the interpreter to clean up."""
    from .. import signals, terminal

    try:
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    signals.hold()  # from here on a signal changes nothing: the run is over
    terminal.leave(code)


def __getattr__(name: str) -> Any:
    if name == "app":
        from ._commands import app

        return app
    raise AttributeError(f"module 'teacli.cli' has no attribute {name!r}")
