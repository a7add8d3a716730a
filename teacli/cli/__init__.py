"""The teacli command line: generate, bench, calibrate and list-models, each a thin layer over the library.

`main` installs the signal handling first and imports the commands (and with them torch and diffusers) after,
so a Ctrl-C or SIGTERM during the slow imports is one line and an exit code, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    from . import _signals

    _signals.hold()  # a Ctrl-C now is acted on once the imports are complete
    try:
        from ._commands import app

        _import_libraries()
        received = _signals.release()
        if received is not None:
            sys.stderr.write("error: interrupted; nothing was written\n")
            sys.exit(128 + received)
        app(prog_name="teacli")
    finally:
        _signals.forget_handled_interrupt()


def _import_libraries() -> None:
    """The heavy libraries every command uses, imported while signals are held (see _signals.hold)."""
    import diffusers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401


def __getattr__(name: str) -> Any:
    if name == "app":
        from ._commands import app

        return app
    raise AttributeError(f"module 'teacli.cli' has no attribute {name!r}")
