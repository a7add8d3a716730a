"""Everything a user can cause, under one base class.

A `TeacliError` is something the user can fix (a bad value, a missing file, a model that will not load); its
message is one line naming what was wrong and what to do. The CLI catches this one class and prints that line;
anything else is a bug and gets the crash report. A new error class subclasses `TeacliError` (and, where callers
expect it, a built-in such as ValueError) and is then caught, printed and listed by the error-table test with no
other edit.

How a message names a setting (the contract every library module follows):

- The library words its messages in the names of its own API (`cache_device`, `lora_scale`, `steps`), never in
  command-line flags, and passes the names the message is about as `field`:

      raise OptionsError(f"lora_scale must be a finite number, got {value}", field="lora_scale")
      raise OptionsError(f"start ({start}) must be below end ({end})", field=("start", "end"))

  `settings.check(name, value, error)` does this for every ranged value (a setting's row, else teacli.limits).
- The CLI prints `error.worded(names)`, where `names` maps each field to the flag of the running command that
  sets it (built from the command's own parameters: `lora_scale` -> `--lora-scale`), so the user reads
  `--lora-scale must be a finite number, got inf`. A field the command has no flag for keeps its API name.
- Only the first whole-word mention of each field is reworded: write the field's name first where the flag
  belongs, and the rest of the sentence may use the same word as plain prose ("a schedule of 4 steps").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any


class TeacliError(Exception):
    """Anything a user can cause and fix; `fields` names the API fields the message is about (`field`: the first)."""

    fields: tuple[str, ...] = ()
    field: str | None = None

    def __init__(self, message: str = "", *, field: str | Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.fields = (field,) if isinstance(field, str) else tuple(field or ())
        self.field = self.fields[0] if self.fields else None

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent between processes (bench --isolate's worker) an error keeps its class, message and fields, whatever
        # its subclass's __init__ takes: rebuilt from its args without calling __init__, then its attributes set.
        return _rebuilt, (type(self), self.args), self.__dict__

    def worded(self, names: Mapping[str, str]) -> str:
        """The message with each of its fields spelled as `names` spells it (the CLI passes field -> flag)."""
        return reword(str(self), self.fields, names)


def _rebuilt(cls: type[TeacliError], args: tuple[Any, ...]) -> TeacliError:
    error = cls.__new__(cls, *args)
    Exception.__init__(error, *args)
    return error


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is running out of memory: host (MemoryError), GPU (torch's OutOfMemoryError) or either
    worded by a library as a RuntimeError."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def reword(message: str, fields: Sequence[str], names: Mapping[str, str]) -> str:
    """`message` with the first whole-word mention of each of `fields` replaced by its spelling in `names`."""
    for field in fields:
        name = names.get(field)
        mention = re.search(rf"(?<![\w-]){re.escape(field)}(?![\w-])", message) if name is not None else None
        if mention is not None:
            message = message[: mention.start()] + name + message[mention.end() :]
    return message
