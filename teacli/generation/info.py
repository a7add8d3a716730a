"""What an output file records (`teacli info FILE`): the metadata teacli wrote with it, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..settings import METADATA_SETTINGS
from .media import read_metadata
from .output import OutputError

# The record's fields in sections, so the table reads top down: what was asked, by which model, what TeaCache
# did, and the run. Fields of none of them (the loading and cache options, the batch) come last, as "other".
SECTIONS = {
    "request": ("prompt", *METADATA_SETTINGS, "call_kwargs"),
    "model": ("model", "model_id", "pipeline", "transformer"),
    "TeaCache": ("policy", "policy_source", "budget", "plan", "thresh", "coefficients", "coefficients_source")
    + ("experts", "computed", "cached", "forced", "calls"),
    "run": ("seconds", "teacli_version", "diffusers_version", "torch_version", "created"),
}


def output_info(path: Path | str) -> dict[str, Any]:
    """The metadata teacli stored with the output at `path`; one clear error for a file teacli did not write."""
    path = Path(path)
    try:
        data = read_metadata(path)
    except OutputError:
        raise
    except (OSError, ValueError) as error:  # not an image Pillow reads, or a chunk that is not JSON
        raise OutputError(
            f"{path} cannot be read as an output teacli wrote ({error}); give a file teacli wrote"
        ) from None
    if not isinstance(data, dict) or "teacli_version" not in data:
        raise OutputError(f"{path}'s metadata was not written by teacli (it has no teacli_version); check the file")
    return data


def render_info(path: Path | str, data: dict[str, Any], console: Console) -> None:
    """One table, field and value, in SECTIONS' order; fields without a value are left out."""
    table = Table(title=escape(str(path)), show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    placed = {name for names in SECTIONS.values() for name in names}
    sections = {**SECTIONS, "other": tuple(name for name in data if name not in placed)}
    for names in sections.values():
        rows = [(name, data[name]) for name in names if data.get(name) not in (None, "")]
        for index, (name, value) in enumerate(rows):
            table.add_row(name, escape(_text(value)), end_section=index == len(rows) - 1)
    console.print(table)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
