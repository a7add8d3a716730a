"""teacli env and teacli info: what teacli runs on, and what an output file records."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import render_report, reserve_stdout_for_json
from ._options import JsonOpt


def env(json_report: JsonOpt = False) -> None:
    """Show teacli, Python, torch and CUDA, diffusers, the device and extras: paste it into a bug report."""
    from ..environment import environment, render_environment

    _show(render_environment, environment, json_report)


def info(
    file: Annotated[Path, typer.Argument(help="An image, video or sound teacli wrote", show_default=False)],
    json_report: JsonOpt = False,
) -> None:
    """Show what an output file records: the prompt and settings, the model, what TeaCache did, the versions."""
    from ..generation.info import output_info, render_info

    _show(partial(render_info, file), partial(output_info, file), json_report)


def _show(render: Any, read: Any, json_report: bool) -> None:
    if json_report:
        reserve_stdout_for_json()  # before reading: a library's print goes to stderr
    render_report(render, read(), json_report)
