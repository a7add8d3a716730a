"""The command line's generation-setting options come from the settings table: a new row is a new option."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from teacli import settings
from teacli.cli import app
from teacli.cli._options import setting_options
from teacli.limits import Limit
from teacli.settings import Setting

SHIFT = Setting("shift", float, "--shift", ("shift",), limit=Limit(integer=False, low=0, high=10), help="Time shift")


def command_with_settings(table: tuple[Setting, ...], monkeypatch) -> tuple[typer.Typer, dict[str, Any]]:
    """A one-command app whose settings options the decorator writes, and what the command received."""
    monkeypatch.setattr(settings, "SETTINGS", table)
    received: dict[str, Any] = {}

    @setting_options(after="model")
    def run(
        model: Annotated[str, typer.Option("--model")] = "m",
        image: Annotated[str | None, typer.Option("--image")] = None,
        verbose: Annotated[bool, typer.Option("--verbose")] = False,
        **given: Any,
    ) -> None:
        received.update(given, model=model, verbose=verbose)

    command = typer.Typer()
    command.command()(run)
    return command, received


def test_a_new_row_is_an_option_with_its_flag_help_and_default(monkeypatch):
    command, received = command_with_settings((*settings.SETTINGS, SHIFT), monkeypatch)
    result = CliRunner().invoke(command, ["--shift", "2.5", "--steps", "7", "--verbose"])
    assert result.exit_code == 0, result.output
    assert received["shift"] == 2.5 and received["steps"] == 7 and received["verbose"] is True
    assert received["seed"] == 0 and received["guidance"] is None  # each row's own default
    help_text = CliRunner().invoke(command, ["--help"], env={"COLUMNS": "200"}).output
    assert "--shift" in help_text and "Time shift" in help_text
    # Placed where asked: after --model, before the command's later options.
    assert help_text.index("--model") < help_text.index("--seed") < help_text.index("--verbose")


def test_a_row_the_command_line_cannot_type_must_be_declared(monkeypatch):
    table = (*settings.SETTINGS, Setting("mask", object, "--mask", ("mask_image",)))
    with pytest.raises(TypeError, match="must declare the option of the setting 'mask'"):
        command_with_settings(table, monkeypatch)


def test_generate_offers_every_setting_of_the_table():
    command = typer.main.get_command(app).commands["generate"]
    flags = {flag for parameter in command.params for flag in parameter.opts}
    assert {row.flag for row in settings.SETTINGS} <= flags
