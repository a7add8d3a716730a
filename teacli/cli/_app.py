"""Errors a user can cause become one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import sys
import traceback
from contextlib import ExitStack
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from .. import terminal
from ..errors import TeacliError
from ..signals import exit_code as interrupt_exit_code
from ..signals import handlers, interrupt_for, interrupt_of, release, restore

EXIT_USER_ERROR = 1

stderr = Console(stderr=True)


class CLIError(TeacliError, typer.TyperException):
    """Anything the user can fix that the CLI itself finds; its message is printed as one line."""

    exit_code = EXIT_USER_ERROR

    def format_message(self) -> str:
        return str(self)


# Library fields whose option has another parameter name: field -> flag, used where the command has the flag.
FIELD_FLAGS: dict[str, str] = {"num_inference_steps": "--steps"}


def flag_names(command: Any) -> dict[str, str]:
    """API field -> the flag that sets it in a click `command`: each option's parameter name (`lora_scale`) gives
    its first long flag (`--lora-scale`), and FIELD_FLAGS adds the fields named otherwise (teacli.errors)."""
    names: dict[str, str] = {}
    for param in getattr(command, "params", ()):
        flags = [opt for opt in param.opts if opt.startswith("--")]
        if param.param_type_name == "option" and flags and param.name:
            names[param.name] = flags[0]
    return {field: flag for field, flag in FIELD_FLAGS.items() if flag in names.values()} | names


# The command running now (OneLineErrorsGroup.resolve_command): user errors are worded with its flags.
_running_command: Any = None


def user_message(error: TeacliError) -> str:
    """A user error as the CLI prints it: its fields spelled as the running command's flags (teacli.errors)."""
    return error.worded(flag_names(_running_command))


def print_error(message: str) -> None:
    one_line = escape(" ".join(str(message).split()))  # a message may hold brackets: 'teacli[video]'
    stderr.print(f"[bold red]error:[/] {one_line}", highlight=False, markup=True, soft_wrap=True)


def interrupted(done: str, interrupt: KeyboardInterrupt) -> NoReturn:
    """A command's own Ctrl-C or SIGTERM: say what is on disk (`done`) and exit with the signal's code."""
    print_error(f"interrupted; {done}")
    raise typer.Exit(interrupt_exit_code(interrupt)) from None


def render_report(render: Any, report: Any, json_report: bool) -> None:
    """A report's tables on stdout, or with --json on stderr and its JSON (`report.to_dict()`, or a dict) on stdout."""
    render(report, ReportConsole(stderr=json_report))
    if json_report:
        print_json(report if isinstance(report, dict) else report.to_dict())


def print_json(data: Any) -> None:
    """A report for scripts on stdout: strict JSON (an infinite PSNR, identical outputs, becomes null)."""
    text, stream = terminal.strict_json(data), terminal.json_stream()
    if stream is None:
        raise CLIError("--json prints to stdout, which is closed; run without closing stdout (or drop --json)")
    try:
        stream.write(text)
        stream.flush()
    except OSError as error:
        terminal.silence_stdout()
        reason = error.strerror or error
        raise CLIError(f"could not write the JSON report to stdout ({reason}); check where stdout goes") from None


# What a command set up for its own duration; OneLineErrorsGroup.main closes it when the command ends.
_command_resources = ExitStack()


def reserve_stdout_for_json(option: str = "--json") -> None:
    """For a command whose JSON report goes to stdout: refuse now if stdout is closed, and until the command
    ends send everything else written to stdout (a library's print or logger, cache-dit's among them) to
    stderr, so stdout carries the JSON alone."""
    if sys.stdout is None:
        raise CLIError(f"{option} prints to stdout, which is closed; run without closing stdout (or drop {option})")
    _command_resources.enter_context(terminal.reserved_stdout())


def broken_pipe() -> CLIError:
    from ..generation.output import written_summary

    return CLIError(f"stdout was closed before the report was written (a broken pipe); {written_summary()}")


class ReportConsole(Console):
    """Rich's console for the report on stdout; a closed pipe is one error line (Rich would exit 1 silently)."""

    def on_broken_pipe(self) -> None:
        terminal.silence_stdout()
        raise broken_pipe()


class Interrupted(CLIError):
    """Ctrl-C or SIGTERM that reached the top of a command: Typer would turn it into a silent exit 130."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        from ..generation.output import written_summary

        super().__init__(f"interrupted; {written_summary()}")
        self.exit_code = interrupt_exit_code(interrupt)


class FlagsWithoutType:
    """A flag takes no value, yet Typer shows its type (`<bool>`) after it as if it did: show nothing there."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            param.metavar = "" if getattr(param, "is_flag", False) else param.metavar
        return params


class Command(FlagsWithoutType, TyperCommand): ...


class OneLineErrorsGroup(FlagsWithoutType, TyperGroup):
    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        global _running_command
        name, command, rest = super().resolve_command(ctx, args)
        _running_command = command
        return name, command, rest

    def invoke(self, ctx: Any) -> Any:
        # Signals are held from the CLI's first line (cli.main) through Typer's set-up, which would turn a
        # KeyboardInterrupt into a silent exit 130: from here on they raise, and one that came meanwhile counts.
        received = release()
        if received is not None:
            raise Interrupted(interrupt_for(received))
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as interrupt:
            raise Interrupted(interrupt) from None
        except BrokenPipeError:  # Typer would exit 1 without a word
            terminal.silence_stdout()
            raise broken_pipe() from None

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        global _running_command
        args, debug = take_debug_flag(sys.argv[1:] if args is None else list(args))
        saved = handlers()  # a command run in-process leaves the caller's signal handling as it was
        _running_command = None
        try:
            with _command_resources:
                code = super().main(
                    args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra
                )
        except TeacliError as error:  # everything a user can cause, CLIError included
            print_error(user_message(error))
            code = getattr(error, "exit_code", EXIT_USER_ERROR)
        except typer.TyperException as error:  # usage errors from parsing
            print_error(error.format_message())
            code = getattr(error, "exit_code", EXIT_USER_ERROR)
        except (typer.Abort, KeyboardInterrupt) as error:  # Ctrl-C or SIGTERM outside a command's own handler
            print_error(Interrupted(interrupt_of(error) or KeyboardInterrupt()).format_message())
            code = interrupt_exit_code(error)
        except Exception as error:  # noqa: BLE001 - a library's failure, told in one line (--debug: traceback)
            if debug:
                traceback.print_exc()
            print_error(describe_failure(error))
            code = EXIT_USER_ERROR
        code = code if isinstance(code, int) else 0
        code = flush_stdout(code)
        restore(saved)
        if standalone_mode:
            sys.exit(code)
        return code


def take_debug_flag(args: list[str]) -> tuple[list[str], bool]:
    """`--debug` anywhere before a `--` shows the traceback of an unexpected failure; so does -v / --verbose."""
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    kept = [arg for index, arg in enumerate(args) if not (arg == "--debug" and index < end)]
    verbose = any(arg in ("-v", "--verbose") for arg in kept[:end])
    return kept, debug or verbose


def flush_stdout(code: int) -> int:
    """A report that cannot reach stdout (closed, a full disk, a closed pipe) is one error line."""
    problem = terminal.flush_stdout()
    if problem is None:
        return code
    print_error(f"could not write the report to stdout ({problem}); check where stdout goes")
    return EXIT_USER_ERROR


def describe_failure(error: BaseException) -> str:
    """One line for a failure teacli did not foresee: what failed and what to do."""
    return str(broken_pipe()) if isinstance(error, BrokenPipeError) else terminal.describe_failure(error)
