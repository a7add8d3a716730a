"""The presets as `teacli list-models` shows them: where their coefficients come from, whether the installed
diffusers can run them, and which come from user preset files; all of them or those matching a word, as a table
that reads at 80 columns or as JSON."""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass
from typing import Any

from rich.markup import escape

from ..tables import Column, FittingTable, print_at_full_width
from . import catalog
from .catalog import PRESETS_ENV, all_presets, replaced_builtin, user_config_presets_dir, user_preset_dirs
from .installed import builtin_extractor_classes, diffusers_exports
from .library_logs import log_to_console

COEFFICIENT_STYLES = {"published": "green", "borrowed": "yellow", "calibrated": "cyan"}
# The table's columns, and the order the others join the name when the console is too narrow for all of them.
COLUMNS = ("name", "family", "model", "pipeline", "transformer", "coefficients", "thresh", "steps", "available")
PREFERENCE = ("coefficients", "thresh", "available", "steps", "family", "model", "pipeline", "transformer")
MATCHED_FIELDS = "name, family, pipeline, transformer or model id"


def list_presets(text: str | None = None, log_console: Any = None) -> PresetListing:
    """Every preset, or those whose name, family (extractor), pipeline, transformer class or model id contains
    `text` (any case); real models first, test models apart. What the installed diffusers can run is read from its
    source, not imported (no torch: the listing answers in a fraction of a second); teacli's warnings (a preset
    folder's skipped files) go to `log_console`."""
    if log_console is not None:
        log_to_console(log_console, False, libraries=False)
    diffusers = diffusers_exports()
    presets = sorted(all_presets().values(), key=lambda p: (p.is_test_model, p.transformer, p.name))
    shown = [preset for preset in presets if matches(preset, text)]
    return PresetListing(shown, text, diffusers.version, set(diffusers.names), extractor_classes(), presets)


def extractor_classes() -> list[str]:
    """The classes with an extractor: the built-in ones, read without importing them, and those registered in this
    process when the registry is already imported (a Python session that added its own)."""
    registry = sys.modules.get("teacli.engine.registry")
    registered = set(getattr(registry, "EXTRACTOR_REGISTRY", {}))
    return sorted(set(builtin_extractor_classes()) | registered)


def matches(preset: Any, text: str | None) -> bool:
    if not text:
        return True
    fields = (preset.name, preset.extractor, preset.pipeline, preset.transformer, preset.model)
    return any(text.lower() in field.lower() for field in fields)


@dataclass
class PresetListing:
    presets: list  # those shown, in order
    text: str | None  # the filter, or None
    diffusers_version: str
    diffusers_names: set[str]  # what the installed diffusers exports, read from its source (models.installed)
    extractors: list[str]  # transformer classes the built-in extractors serve
    every_preset: list  # before filtering: where the closest names come from

    def unavailable(self, preset: Any) -> str | None:
        """Why the installed diffusers cannot run `preset`, or None when it can."""
        missing = [name for name in (preset.pipeline, preset.transformer) if name not in self.diffusers_names]
        if missing:
            return f"{', '.join(missing)} not in this diffusers"
        return None if preset.transformer in self.extractors else "no extractor"

    def entry(self, preset: Any) -> dict[str, Any]:
        """One preset for `--json`: what the table shows, whole."""
        why_not = self.unavailable(preset)
        return {
            "name": preset.name,
            "family": preset.extractor,
            "model": preset.model,
            "pipeline": preset.pipeline,
            "transformer": preset.transformer,
            "coefficients_kind": preset.coefficients_kind,
            "coefficients_source": preset.coefficients_source,
            "coefficients": list(preset.coefficients),
            "thresh": preset.thresh,
            "steps": preset.defaults.steps,
            "available": why_not is None,
            "unavailable_because": why_not,
            "default": preset.name == catalog.DEFAULT_PRESET,
            "test_model": preset.is_test_model,
            "user": preset.is_user,
            "source": preset.source,
            "description": preset.description,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "diffusers": self.diffusers_version,
            "filter": self.text,
            "presets": [self.entry(preset) for preset in self.presets],
            "extractors": self.extractors,
        }

    def closest(self) -> list[str]:
        """The preset names and families nearest a filter that matched nothing."""
        words = {*(p.name for p in self.every_preset), *(p.extractor for p in self.every_preset)}
        return difflib.get_close_matches((self.text or "").lower(), sorted(words), n=4, cutoff=0.5)

    def render(self, console: Any, wide: bool = False) -> None:
        """The table (the columns that fit the console; every one with `wide`), why some presets cannot run,
        the user presets' files, and the transformer classes that have an extractor."""
        if not self.presets:
            near = self.closest()
            hint = f"; closest: {', '.join(near)}" if near else "; `teacli list-models` lists them all"
            console.print(f"no preset matches '{escape(self.text or '')}' ({MATCHED_FIELDS}){hint}", highlight=False)
            return
        table, left_out = self.table().narrowed(console, PREFERENCE, wide)
        if wide:
            print_at_full_width(table, console)
        else:
            console.print(table)
        if left_out:
            console.print(
                f"not shown at this width: {', '.join(left_out)} (--wide shows every column, --json everything)",
                style="dim",
                highlight=False,
            )
        for preset in self.presets:
            if (why_not := self.unavailable(preset)) is not None:
                console.print(f"{preset.name} cannot run here: {escape(why_not)}", highlight=False)
        print_user_presets([p for p in self.presets if p.is_user], console, quiet=bool(self.text))
        if not self.text:
            console.print(f"{len(self.extractors)} transformer classes have an extractor: {', '.join(self.extractors)}")

    def table(self) -> FittingTable:
        filtered = f", matching '{escape(self.text)}'" if self.text else ""
        table = FittingTable(
            [Column(name, justify="left", names_row=name == "name") for name in COLUMNS],
            title=f"teacli presets (diffusers {self.diffusers_version}){filtered}",
            caption="coefficients: published (fitted for the model), borrowed (from a similar model: "
            "teacli calibrate fits your own), calibrated. test: a tiny offline pipeline for tests, not for "
            "pictures. user: from a user preset file (listed below)",
        )
        for preset in self.presets:
            kind = preset.coefficients_kind
            table.add_row(
                label(preset),
                preset.extractor,
                escape(preset.model),
                preset.pipeline,
                preset.transformer,
                f"[{COEFFICIENT_STYLES[kind]}]{kind}[/]",
                f"{preset.thresh:g}",
                str(preset.defaults.steps),
                "yes" if self.unavailable(preset) is None else "no",
                end_section=_last_real_model(preset, self.presets),
            )
        return table


def label(preset: Any) -> str:
    shown = (
        ("default", preset.name == catalog.DEFAULT_PRESET),
        ("test", preset.is_test_model),
        ("user", preset.is_user),
    )
    marks = [mark for mark, flag in shown if flag]
    return f"{preset.name} [dim]({', '.join(marks)})[/]" if marks else preset.name


def print_user_presets(presets: list, console: Any, quiet: bool = False) -> None:
    """Which file each user preset comes from, and which built-in it replaces; where they would go when there are
    none (unless `quiet`: a filtered listing)."""
    if not presets:
        if not quiet:
            hint = f"preset .yaml files in {user_config_presets_dir()} or a directory named by {PRESETS_ENV}"
            console.print(f"user presets: none ({escape(hint)})", highlight=False)
        return
    searched = ", ".join(str(directory) for directory in user_preset_dirs())
    console.print(
        f"user presets (searched in order, the first one with a name wins: {escape(searched)}):", highlight=False
    )
    for preset in presets:
        replaced = replaced_builtin(preset)
        note = f", replaces the built-in {replaced.name}" if replaced is not None else ", a new preset"
        console.print(f"  {preset.name} (user): {escape(preset.source)}{note}", highlight=False, soft_wrap=True)


def _last_real_model(preset: Any, presets: list) -> bool:
    """A rule under the last real model, so the test models stand apart."""
    index = presets.index(preset)
    return not preset.is_test_model and index + 1 < len(presets) and presets[index + 1].is_test_model
