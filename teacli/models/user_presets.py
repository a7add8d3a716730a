"""User presets: the directories TEACLI_PRESETS names, then the user config directory.

A user preset with a built-in's name replaces it (catalog.all_presets); every error names the file and the field.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from ..files import file_kind
from .preset import Preset, PresetError
from .preset_fields import shown_name
from .preset_files import PRESET_SUFFIXES, load_preset_file

logger = logging.getLogger("teacli")

PRESETS_ENV = "TEACLI_PRESETS"


def user_config_presets_dir() -> Path:
    """The presets folder in the user's config directory (~/.config/teacli/presets on Linux); may not exist."""
    import platformdirs

    return Path(platformdirs.user_config_dir("teacli", appauthor=False)) / "presets"


def user_preset_dirs() -> list[Path]:
    """The directories searched for user presets, first wins: TEACLI_PRESETS in order, then the config one.

    A directory TEACLI_PRESETS names must exist (a typo there would otherwise hide the user's presets);
    the config directory is searched only when it exists.
    """
    dirs: list[Path] = []
    for entry in os.environ.get(PRESETS_ENV, "").split(os.pathsep):
        if not entry.strip():
            continue
        directory = Path(entry).expanduser()
        if not directory.is_dir():
            raise PresetError(
                f"{PRESETS_ENV} names {entry}, which is not a directory; create it or fix {PRESETS_ENV} "
                f"(directories separated by '{os.pathsep}')"
            )
        dirs.append(directory)
    config_dir = user_config_presets_dir()
    if config_dir.is_dir():
        dirs.append(config_dir)
    unique: dict[Path, Path] = {}
    for directory in dirs:
        unique.setdefault(directory.resolve(), directory)
    return list(unique.values())


# Non-regular files (FIFOs, directories, ...) named like presets that were skipped and said so, once each.
_skipped: set[str] = set()


def _is_special(path: Path) -> bool:
    """A FIFO, directory, socket or device: never opened (a FIFO would block every command). A path that cannot
    be stat'ed (a dangling link) is not special: load_preset_file says why it cannot be read."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if stat.S_ISREG(mode):
        return False
    if str(path) not in _skipped:
        _skipped.add(str(path))
        logger.warning("skipping %s: %s, not a regular file, cannot be a preset", path, file_kind(mode))
    return True


def _presets_in(directory: Path) -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    try:
        names = [p for p in directory.iterdir() if p.name.endswith(PRESET_SUFFIXES) and not p.name.startswith(".")]
    except OSError as error:
        raise PresetError(
            f"preset directory {directory} cannot be read ({error.strerror or error}); fix its permissions or "
            f"remove it from {PRESETS_ENV}"
        ) from None
    files = [p for p in names if not _is_special(p)]
    for path in sorted(files, key=lambda p: p.name):
        preset = load_preset_file(path)
        if preset.name in presets:
            raise PresetError(
                f"preset {path}: field 'name': '{shown_name(preset.name)}' is also used by "
                f"{presets[preset.name].source} in the same directory; rename one or move it elsewhere"
            )
        presets[preset.name] = preset
    return presets


def user_presets() -> dict[str, Preset]:
    """Every *.yaml / *.yml in the user preset directories, by name; the first directory with a name wins.

    Read afresh on every call (the directories and TEACLI_PRESETS may change); a broken file is an error,
    not skipped: ignoring a file the user wrote would silently run the built-in preset instead.
    """
    presets: dict[str, Preset] = {}
    for directory in user_preset_dirs():
        for name, preset in _presets_in(directory).items():
            presets.setdefault(name, preset)
    return presets
