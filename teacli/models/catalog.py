"""Model presets: one YAML file per model, found by name, hub id or transformer class.

Built-in presets ship in the teacli.presets package. User presets live in the directories named by
TEACLI_PRESETS and in the user config directory (~/.config/teacli/presets on Linux); a user preset with
a built-in's name replaces it. Every error names the file and the field.

The parts: preset (the dataclasses), preset_fields (validating a file's mapping), preset_files (reading a file),
user_presets (the user's directories). Their public names are importable from here too.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from .preset import EMBEDDED_PREFIX, Component, Defaults, ExpertOverride, Preset, PresetError
from .preset_fields import parse_preset, preset_to_dict, shown_name
from .preset_files import PRESET_SUFFIXES, load_preset_file
from .user_presets import PRESETS_ENV, user_config_presets_dir, user_preset_dirs, user_presets

__all__ = [
    "DEFAULT_PRESET",
    "EMBEDDED_PREFIX",
    "PRESETS_ENV",
    "PRESET_SUFFIXES",
    "Component",
    "Defaults",
    "ExpertOverride",
    "Preset",
    "PresetError",
    "all_presets",
    "builtin_presets",
    "find_preset",
    "load_preset_file",
    "parse_preset",
    "preset_to_dict",
    "presets_for_transformer",
    "replaced_builtin",
    "user_config_presets_dir",
    "user_preset_dirs",
    "user_presets",
]

DEFAULT_PRESET = "teacli-shapes"  # trained and shipped with teacli, so it runs offline anywhere


@cache
def builtin_presets() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for entry in sorted(resources.files("teacli.presets").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(PRESET_SUFFIXES):
            preset = load_preset_file(Path(str(entry)))
            if preset.name in presets:
                other = presets[preset.name].source
                raise PresetError(f"preset {entry}: field 'name': '{shown_name(preset.name)}' is also used by {other}")
            presets[preset.name] = preset
    return presets


def all_presets() -> dict[str, Preset]:
    """Built-in presets with user presets replacing those of the same name, then new user presets."""
    return {**builtin_presets(), **user_presets()}


def find_preset(name_or_model: str) -> Preset | None:
    """A preset (user or built-in) by its name, or by the hub id / path in its `model` field."""
    presets = all_presets()
    if name_or_model in presets:
        return presets[name_or_model]
    matches = [p for p in presets.values() if p.model == name_or_model]
    # Several presets may share weights (tiny-flux and tiny-flux-kontext): the plain generation one wins,
    # then a user preset (a calibrated one) over a built-in.
    return min(matches, key=lambda p: (p.needs_image, not p.is_user, p.name), default=None)


def presets_for_transformer(class_name: str) -> list[Preset]:
    return [p for p in builtin_presets().values() if p.transformer == class_name]


def replaced_builtin(preset: Preset) -> Preset | None:
    """The built-in preset a user preset replaces (same name), if any."""
    return builtin_presets().get(preset.name) if preset.is_user else None
