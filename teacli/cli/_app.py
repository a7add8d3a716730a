"""Errors a user can cause become one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130

stderr = Console(stderr=True)


class CLIError(typer.TyperException):
    """Anything the user can fix; its message is printed as one line."""

    exit_code = EXIT_USER_ERROR

    def format_message(self) -> str:
        return str(self)


def user_error_types() -> tuple[type[Exception], ...]:
    from ..calibration import CalibrationError
    from ..catalog import PresetError
    from ..context import ExtractorContractError
    from ..embedded import UnknownEmbeddedModel
    from ..hook import TeaCacheError
    from ..loading import ModelError
    from ..output import OutputError
    from ..peers import PeerError
    from ..plot import PlotUnavailable
    from ..preparation import OptionsError
    from ..prompts import PromptsError
    from ..registry import UnknownTransformerError
    from ..runner import GenerationError

    return (
        PresetError,
        ModelError,
        OutputError,
        TeaCacheError,
        UnknownTransformerError,
        GenerationError,
        UnknownEmbeddedModel,
        CalibrationError,
        PromptsError,
        PlotUnavailable,
        OptionsError,
        PeerError,
        ExtractorContractError,  # a preset's modulated_input naming what its extractor does not offer
    )


def print_error(message: str) -> None:
    one_line = escape(" ".join(str(message).split()))  # a message may hold brackets: 'teacli[video]'
    stderr.print(f"[bold red]error:[/] {one_line}", highlight=False, markup=True, soft_wrap=True)


def print_warning(message: str) -> None:
    one_line = escape(" ".join(str(message).split()))
    stderr.print(f"[bold yellow]warning:[/] {one_line}", highlight=False, markup=True, soft_wrap=True)


def print_json(data: Any) -> None:
    """A report for scripts on stdout: strict JSON (an infinite PSNR, identical outputs, becomes null)."""
    import json
    import math

    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value

    sys.stdout.write(json.dumps(finite(data), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


class OneLineErrorsGroup(TyperGroup):
    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(
                args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra
            )
        except typer.TyperException as error:  # usage errors from parsing, and CLIError
            print_error(error.format_message() if hasattr(error, "format_message") else str(error))
            code = getattr(error, "exit_code", EXIT_USER_ERROR)
        except typer.Abort:  # Ctrl-C outside a command's own handler
            print_error("interrupted; nothing was written")
            code = EXIT_INTERRUPTED
        except user_error_types() as error:
            print_error(str(error))
            code = EXIT_USER_ERROR
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def setup_logging(verbose: bool) -> None:
    """teacli's own lines through Rich on stderr; the libraries' chatter only when verbose."""
    from rich.logging import RichHandler

    logger = logging.getLogger("teacli")
    logger.handlers[:] = [RichHandler(console=stderr, show_time=False, show_path=False, markup=False)]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    quiet_libraries(verbose)


def quiet_libraries(verbose: bool = False) -> None:
    """diffusers' and transformers' progress bars and notices would drown the report."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if not verbose:
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
