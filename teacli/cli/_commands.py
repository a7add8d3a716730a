"""The Typer app: every command registered on one group whose errors are one line."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from ._app import Command, OneLineErrorsGroup

app = typer.Typer(
    cls=OneLineErrorsGroup,
    help="TeaCache for diffusers pipelines: fewer transformer calls, same pictures.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"teacli {__version__}")
        raise typer.Exit()


VersionOpt = Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Show version")]


@app.callback()
def _main(version: VersionOpt = False) -> None: ...


from .about import env, info  # noqa: E402 - the commands register on the app above
from .bench import bench  # noqa: E402
from .calibrate import calibrate  # noqa: E402
from .generate import generate  # noqa: E402
from .list_models import list_models  # noqa: E402

COMMANDS = {"generate": generate, "bench": bench, "calibrate": calibrate, "list-models": list_models}
for name, command in {**COMMANDS, "info": info, "env": env}.items():
    app.command(name, cls=Command)(command)
