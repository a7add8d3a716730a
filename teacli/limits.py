"""Ranges, checked the same way wherever a value comes from: the command line, a preset, a JSONL prompts line or
the Python API. `Limit` is a range; LIMITS holds the ranges of the values that are not generation settings
(TeaCache's threshold, a LoRA's scale, a bench's runs, ...): each generation setting's range is in its row of
teacli.settings.

A value that passes here can reach torch and the pipeline without overflowing an integer, turning a feature
off by being NaN, or asking for more work than any real run needs. Sizes a particular model cannot make are
checked later, once the model is known (runner.fit_size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # leaf modules import no other (tests/test_architecture.py); only the annotation needs it
    from .errors import TeacliError

# torch.Generator.manual_seed takes an unsigned 64-bit seed.
MAX_SEED = 2**64 - 1
# The most steps a schedule may have (far above any published one; a step still fits a tensor index).
MAX_STEPS = 10_000


@dataclass(frozen=True)
class Limit:
    integer: bool
    low: float
    high: float
    low_open: bool = False  # the low end itself is not allowed (fps > 0)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        low, high = (f"{int(v)}" if self.integer else f"{v:g}" for v in (self.low, self.high))
        if self.low_open:
            return f"{kind} above {low} and at most {high}"
        return f"{kind} between {low} and {high}"

    def problem(self, value: Any) -> str | None:
        """None when `value` is allowed, else what it must be."""
        if isinstance(value, bool):
            return self.describe()
        if self.integer:
            if not isinstance(value, int):
                return self.describe()
        elif not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            return self.describe()  # (an int is finite; math.isfinite would overflow on a huge one)
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            return self.describe()
        return None


# The values that are not generation settings (those have their ranges in teacli.settings), with bounds far above
# any real run and low enough that the value is still meaningful to torch.
LIMITS: dict[str, Limit] = {
    "thresh": Limit(integer=False, low=0, high=1e6),
    "lora_scale": Limit(integer=False, low=-100, high=100),
    "ret_steps": Limit(integer=True, low=0, high=MAX_STEPS),
    "cutoff_steps": Limit(integer=True, low=1, high=MAX_STEPS),
    "max_cached_in_row": Limit(integer=True, low=1, high=MAX_STEPS),
    "runs": Limit(integer=True, low=1, high=1_000),
    "warmup": Limit(integer=True, low=0, high=1_000),
    "num_prompts": Limit(integer=True, low=1, high=100_000),
}


def check(name: str, value: Any, error: type[TeacliError], limit: Limit | None = None) -> Any:
    """`value` unchanged, or `error("NAME must be ..., got VALUE", field=NAME)`, which the CLI words with the
    option's flag (teacli.errors); None passes (not given). `limit`: the range, when it is not LIMITS[name]
    (a generation setting's: teacli.settings.check passes it)."""
    if value is None:
        return None
    wanted = (limit or LIMITS[name]).problem(value)
    if wanted is not None:
        raise error(f"{name} must be {wanted}, got {short(value)}", field=name)
    return value


# A library's reason quoted in a message is cut to this many characters: messages are one readable line.
REASON_LIMIT = 200


def clip(text: str, length: int = REASON_LIMIT) -> str:
    """Text (a library's reason) as one line of at most `length` characters: whitespace collapsed, cut with '…'."""
    line = " ".join(str(text).split())
    return line if len(line) <= length else line[: length - 1].rstrip() + "…"


def unencodable(text: str) -> int | None:
    """The position of the first character of `text` that UTF-8 cannot encode (a lone surrogate: undecodable
    bytes on the command line, a \\ud800 escape in JSON), or None: no tokenizer can read such text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def short(value: Any, length: int = 60) -> str:
    """A value as a message shows it: never longer than `length` characters, whatever the user gave."""
    text = repr(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value}"
    if isinstance(value, int) and not isinstance(value, bool) and len(text) > length:
        return f"an integer of {len(text)} digits"
    return text if len(text) <= length else text[: length - 3] + "..."
