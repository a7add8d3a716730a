"""What a bench is asked to compare, checked before anything loads: the budgets to compare the caches at, the
budget rows, the JSON and plot files. Nothing here imports torch or diffusers, so the command line refuses a bad
value in a fraction of a second."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import TeacliError


class BenchError(TeacliError, ValueError):
    """A bench setting that cannot run (a budget beyond the calls of a picture, a malformed list); `field` names it."""


AT_CALLS_FORM = "comma-separated numbers of computed transformer calls per picture, e.g. 12,16,20,24,32"


def parse_at_calls(text: str | None) -> list[int | float] | None:
    """at_calls as the user wrote it ("12,16,20"): the budgets, each a finite number above 0, in the order given,
    repeats dropped. Whether each is within the calls a picture takes is known once the first picture is made."""
    import math

    from ..limits import short

    if text is None:
        return None
    budgets: list[int | float] = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise BenchError(
                f"at_calls takes {AT_CALLS_FORM}; {short(part.strip())} is not a number", field="at_calls"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise BenchError(
                f"at_calls takes {AT_CALLS_FORM}; {short(part.strip())} is not a finite number above 0",
                field="at_calls",
            )
        budgets.append(int(value) if value.is_integer() else value)
    return list(dict.fromkeys(budgets))


def check_at_calls(budgets: Sequence[float], total: int, steps: int) -> None:
    """Every budget within the transformer calls of one picture (`total`, counted on the first picture made)."""
    over = [budget for budget in budgets if budget > total]
    if over:
        raise BenchError(
            f"at_calls {over[0]:g} is more than the {total} transformer calls a picture takes here "
            f"({steps} steps); give budgets up to {total}",
            field="at_calls",
        )


def split_budgets(budgets: str | None, policy: str) -> list[str]:
    """Budgets written as "6,8,3x", each checked with `policy` (generation.policy.check_policy) before anything
    loads; a bench runs TeaCache's rule at its thresholds, so the policy only says how the budget rows run."""
    from ..generation.policy import check_policy

    texts = [part.strip() for part in budgets.split(",")] if budgets is not None else []
    if policy == "teacache":
        raise BenchError(
            "bench always runs TeaCache's rule at thresh; policy chooses how budget rows run",
            field=("thresh", "policy", "budget"),
        )
    for text in texts or [None]:
        check_policy(policy, text)
    return texts


def check_outputs(json_out: Path | None, plot: Path | None, overwrite: bool) -> None:
    """The JSON file and the plot checked writable, and the plot a PNG that can be drawn, before anything loads."""
    from ..generation.output import check_writable
    from .plot import check_plot_available

    if json_out is not None:
        check_writable(json_out, overwrite, kind="--json")
    if plot is not None and json_out is not None and plot.resolve() == json_out.resolve():
        raise BenchError(f"json_out and plot both name {plot}; give each its own file", field=("json_out", "plot"))
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise BenchError(f"plot {plot} must end in .png", field="plot")
        check_writable(plot, overwrite, kind="--plot")
        check_plot_available()


def check_prompt_sources(
    prompt: str | None, prompts: Path | None, num_prompts: int | None, isolated_over_prompts: bool
) -> None:
    """One prompt or a prompts file (whose first `num_prompts` are used), and a prompts file is never isolated."""
    if num_prompts is not None and prompts is None:
        raise BenchError(
            "num_prompts takes the first N of prompts FILE; give that file too", field=("num_prompts", "prompts")
        )
    if prompts is not None and prompt is not None:
        raise BenchError(
            "give prompt or prompts FILE, not both: with a prompts file the prompts come from it",
            field=("prompt", "prompts"),
        )
    if isolated_over_prompts:
        raise BenchError(
            "isolate measures one prompt; drop it with prompts or at_calls (those run interleaved)",
            field=("isolate", "prompts", "at_calls"),
        )


def parse_quantizations(text: str | None) -> list[str | None]:
    """`quantize` as bench takes it: one method, or several comma-separated ("none": the unquantized model)."""
    if text is None:
        return [None]
    from ..models.memory import NOT_QUANTIZED, check_quantize

    names = [None if name.strip() == NOT_QUANTIZED else name.strip() for name in text.split(",")]
    for name in names:
        check_quantize(name)
    return list(dict.fromkeys(names))


def check_quantizations(quantizations: Sequence[str | None], over_prompts: bool, isolate: bool) -> None:
    """Several quantizations are compared on one prompt, interleaved, one pipeline loaded at a time."""
    if len(quantizations) > 1 and (over_prompts or isolate):
        raise BenchError(
            "quantize with several methods compares them on one prompt, interleaved; drop prompts, at_calls and "
            "isolate, or give one method",
            field=("quantize", "prompts", "at_calls", "isolate"),
        )
