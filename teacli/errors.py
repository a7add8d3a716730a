"""Everything a user can cause, under one base class.

A `TeacliError` is something the user can fix (a bad value, a missing file, a model that will not load); its
message is one line naming what was wrong and what to do. The CLI catches this one class and prints that line;
anything else is a bug and gets the crash report.

The library words its messages in the names of its own API (`cache_device`, `lora_scale`); an error that is about
one field says which in `field`, and the CLI rewords that name as the option that sets it (`--cache-device`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping


class TeacliError(Exception):
    """Anything a user can cause and fix; `field` names the API field the message is about, if one."""

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def worded(self, names: Mapping[str, str]) -> str:
        """The message with its field spelled as `names` spells it (the CLI passes field -> flag)."""
        message = str(self)
        name = names.get(self.field) if self.field else None
        if name is None:
            return message
        return re.sub(rf"(?<![\w-]){re.escape(self.field)}(?![\w-])", name, message)
