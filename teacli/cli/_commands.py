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

from . import bench, calibrate, generate, list_models  # noqa: E402

app.command("generate")(generate.generate)
app.command("bench")(bench.bench)
app.command("calibrate")(calibrate.calibrate)
app.command("list-models")(list_models.list_models)
