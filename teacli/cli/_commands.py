"""The Typer app: every command registered on one group whose errors are one line."""

from __future__ import annotations

import typer

from ._app import OneLineErrorsGroup

app = typer.Typer(
    cls=OneLineErrorsGroup,
    help="TeaCache for diffusers pipelines: fewer transformer calls, same pictures.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

from .bench import bench  # noqa: E402 - the commands register on the app above
from .calibrate import calibrate  # noqa: E402
from .generate import generate  # noqa: E402
from .list_models import list_models  # noqa: E402

app.command("generate")(generate)
app.command("bench")(bench)
app.command("calibrate")(calibrate)
app.command("list-models")(list_models)
