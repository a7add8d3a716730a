"""The teacli command line: generate, bench, calibrate and list-models, each a thin layer over the library.

`main` installs the signal handling first; the commands import torch and diffusers only once their cheap checks
passed (_app.import_libraries), with signals held meanwhile, so a Ctrl-C or SIGTERM at any moment is one line and
an exit code, never a traceback.
"""

from __future__ import annotations

from typing import Any


def main() -> None:
    from . import _signals

    _signals.hold()  # a Ctrl-C now is acted on once the CLI's own modules are imported
    try:
        from ._commands import app

        app(prog_name="teacli")  # the command releases the signals (OneLineErrorsGroup.invoke)
    finally:
        _signals.forget_handled_interrupt()


def __getattr__(name: str) -> Any:
    if name == "app":
        from ._commands import app

        return app
    raise AttributeError(f"module 'teacli.cli' has no attribute {name!r}")
