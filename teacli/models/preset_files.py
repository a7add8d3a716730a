"""Reading a preset file: a regular UTF-8 file of bounded size, plain YAML of bounded size and depth.

What a preset file may hold is a few dozen fields. Reading is bounded so that no file (a YAML alias bomb, a FIFO,
a huge or deeply nested document) can take more than a moment or more than a little memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..files import NotRegularFile, TooLarge, read_regular_file
from .preset import Preset, PresetError
from .preset_fields import parse_preset

PRESET_SUFFIXES = (".yaml", ".yml")
MAX_PRESET_BYTES = 1_048_576  # 1 MiB
MAX_PRESET_NODES = 10_000  # values, counted once per alias that repeats them
MAX_PRESET_DEPTH = 32  # levels of nesting


class _PresetLoader(yaml.SafeLoader):
    """yaml.safe_load's loader (the same tags, the same values), bounded: it stops composing past
    MAX_PRESET_NODES values or MAX_PRESET_DEPTH levels, and refuses a document whose aliases repeat values
    past those bounds (a "billion laughs" file: a few lines whose aliases stand for billions of values)."""

    def __init__(self, text: str, path: str) -> None:
        super().__init__(text)
        self.path = path
        self.composed = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.composed += 1
        if self.composed > MAX_PRESET_NODES:
            raise _too_many(self.path)
        if self.depth >= MAX_PRESET_DEPTH:
            raise _too_deep(self.path)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self.check_expansion(node)
        return self.construct_document(node)

    def check_expansion(self, root: yaml.Node) -> None:
        """Count the values as if every alias were replaced by a copy of what it names, without copying:
        each node's count and depth once (aliases share nodes), stopping as soon as a bound is passed."""
        sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels) it stands for
        open_nodes: set[int] = set()  # on the path from the root: meeting one again is an alias of itself
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            key = id(node)
            children = _child_nodes(node)
            if children_done:
                open_nodes.discard(key)
                size = 1 + sum(sizes[id(child)][0] for child in children)
                depth = 1 + max((sizes[id(child)][1] for child in children), default=0)
                if size > MAX_PRESET_NODES:
                    raise _too_many(self.path)
                if depth > MAX_PRESET_DEPTH:
                    raise _too_deep(self.path)
                sizes[key] = (size, depth)
            elif key not in sizes:
                if key in open_nodes:
                    raise PresetError(
                        f"preset {self.path}: a YAML alias refers to a value that contains it (an endless value); "
                        "a preset is a few dozen fields: write them out"
                    )
                open_nodes.add(key)
                stack.append((node, True))
                stack.extend((child, False) for child in children if id(child) not in sizes)


def _too_many(path: str) -> PresetError:
    return PresetError(
        f"preset {path}: too many YAML aliases/nodes: it holds over {MAX_PRESET_NODES} values once its aliases "
        "are expanded; a preset is a few dozen fields: write them out"
    )


def _too_deep(path: str) -> PresetError:
    return PresetError(
        f"preset {path}: nested more than {MAX_PRESET_DEPTH} levels deep (counting what its aliases stand for); "
        "a preset is a few dozen fields: write them out"
    )


def _child_nodes(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _read_preset_bytes(path: Path) -> bytes:
    """The file's bytes: a regular file of at most MAX_PRESET_BYTES (files.read_regular_file)."""
    try:
        return read_regular_file(path, MAX_PRESET_BYTES)
    except NotRegularFile as error:
        raise PresetError(f"preset {path}: cannot be read ({error.kind}, not a regular file)") from None
    except TooLarge:
        raise PresetError(
            f"preset {path}: is larger than {MAX_PRESET_BYTES} bytes; a preset is a few dozen fields "
            "(is it the right file?)"
        ) from None
    except OSError as error:
        raise PresetError(f"preset {path}: cannot be read ({error.strerror or error})") from None


def load_preset_file(path: str | Path) -> Preset:
    path = Path(path)
    try:
        text = _read_preset_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise PresetError(f"preset {path}: is not UTF-8 text; save it as UTF-8") from None
    loader = _PresetLoader(text, str(path))
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or error
        if isinstance(error, yaml.constructor.ConstructorError):
            problem = f"{problem} (presets are plain YAML: tags such as !!python/object are not allowed)"
        raise PresetError(f"preset {path}: not valid YAML{where}: {problem}") from None
    finally:
        loader.dispose()
    return parse_preset(data, str(path))
