"""A user error names API fields in the library and flags on the command line (teacli.errors): the CLI spells
each field as the flag of the command that ran, and `--model`'s help states the real default preset."""

from __future__ import annotations

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from teacli import limits
from teacli.cli import app
from teacli.cli._app import CLIError, OneLineErrorsGroup, flag_names
from teacli.errors import TeacliError, reword
from teacli.generation.preparation import OptionsError
from teacli.models.catalog import DEFAULT_PRESET


def test_reword_spells_the_first_mention_of_each_field():
    names = {"start": "--start", "end": "--end", "steps": "--steps"}
    message = "start (0.6) must be below end (0.4): a schedule of steps has no cacheable steps"
    worded = reword(message, ("start", "end", "steps"), names)
    assert worded == "--start (0.6) must be below --end (0.4): a schedule of --steps has no cacheable steps"
    assert reword(worded, ("start", "end"), names) == worded  # a flag is never reworded again
    assert reword("ret_steps must be set", ("ret_steps",), {"steps": "--steps"}) == "ret_steps must be set"
    assert reword("cache_device_x is odd", ("cache_device",), {"cache_device": "--cache-device"}).startswith("cache_")


def test_an_error_sent_between_processes_keeps_its_class_message_and_fields():
    """bench --isolate's worker sends its errors back pickled: the CLI must still word their fields as flags."""
    import pickle

    from teacli.batch.run import PromptsFailed
    from teacli.bench.options import BenchError

    error = pickle.loads(pickle.dumps(BenchError("at_calls 99 is more than start allows", field=("at_calls", "start"))))
    assert type(error) is BenchError and isinstance(error, ValueError)
    assert (str(error), error.fields, error.field) == (
        "at_calls 99 is more than start allows",
        ("at_calls", "start"),
        "at_calls",
    )
    assert error.worded({"at_calls": "--at-calls", "start": "--start"}) == "--at-calls 99 is more than --start allows"
    # A subclass whose __init__ takes other arguments comes back whole too.
    failed = pickle.loads(pickle.dumps(PromptsFailed("2 prompts failed", summary=None)))
    assert (type(failed), str(failed), failed.summary, failed.fields) == (PromptsFailed, "2 prompts failed", None, ())
    cli_error = pickle.loads(pickle.dumps(CLIError("steps must be at least 1", field="steps")))
    assert (cli_error.format_message(), cli_error.exit_code, cli_error.fields) == (
        "steps must be at least 1",
        1,
        ("steps",),
    )


def test_an_error_keeps_its_fields_and_its_api_wording():
    error = OptionsError("lora_scale must be a finite number, got inf", field="lora_scale")
    assert isinstance(error, TeacliError) and isinstance(error, ValueError)
    assert str(error) == "lora_scale must be a finite number, got inf"  # the Python API's words
    assert error.field == "lora_scale" and error.fields == ("lora_scale",)
    assert error.worded({"lora_scale": "--lora-scale"}) == "--lora-scale must be a finite number, got inf"
    assert TeacliError("plain").worded({"plain": "--plain"}) == "plain"  # no field, no rewording
    assert TeacliError("a b", field=("a", "b")).fields == ("a", "b")
    assert issubclass(CLIError, TeacliError)


def test_limits_check_names_the_field():
    with pytest.raises(OptionsError) as caught:
        limits.check("ret_steps", -1, OptionsError)
    assert str(caught.value) == "ret_steps must be an integer between 0 and 10000, got -1"
    assert caught.value.field == "ret_steps"
    assert limits.check("ret_steps", None, OptionsError) is None


def test_flag_names_come_from_the_command_parameters():
    names = flag_names(get_command(app).commands["generate"])
    assert names["lora_scale"] == "--lora-scale" and names["max_cached_in_row"] == "--max-cached-in-row"
    assert names["json_report"] == "--json"  # the flag, not the parameter's name
    assert names["num_inference_steps"] == "--steps"  # an explicit override (cli._app.FIELD_FLAGS)
    assert "prompt" not in names  # an argument has no flag
    assert "num_inference_steps" not in flag_names(get_command(app).commands["list-models"])


def two_commands() -> typer.Typer:
    """A CLI where one command sets lora_scale with its own flag and the other has no flag for it."""
    toy = typer.Typer(cls=OneLineErrorsGroup)

    @toy.command("with-flag")
    def with_flag(lora_scale: float = typer.Option(1.0, "--strength")) -> None:
        raise OptionsError(f"lora_scale must be a finite number, got {lora_scale}", field="lora_scale")

    @toy.command("without")
    def without() -> None:
        raise OptionsError("lora_scale must be a finite number, got nan", field="lora_scale")

    return toy


@pytest.mark.parametrize(
    "args, line",
    [
        (["with-flag", "--strength", "inf"], "error: --strength must be a finite number, got inf"),
        (["without"], "error: lora_scale must be a finite number, got nan"),
    ],
)
def test_the_cli_words_a_field_as_the_running_command_flag(args, line):
    result = CliRunner().invoke(two_commands(), args)
    assert result.exit_code == 1
    assert result.stderr.strip() == line


def test_a_library_error_reaches_the_user_worded_as_the_option(runner):
    result = runner.invoke(app, ["generate", "a red circle", "--lora-scale", "500"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: --lora-scale must be a finite number between -100 and 100, got 500.0"


@pytest.mark.parametrize("command", ["generate", "bench", "calibrate"])
def test_model_help_states_the_real_default(runner, command):
    option = next(p for p in get_command(app).commands[command].params if p.name == "model")
    assert option.default is None and option.show_default == DEFAULT_PRESET  # None: resolved to the default later
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    model_line = next(line for line in result.stdout.splitlines() if "--model" in line)
    assert f"[default: ({DEFAULT_PRESET})]" in model_line, model_line  # click's form for a default it does not set
    assert "tiny-flux" not in result.stdout
