"""What the installed diffusers exports and which transformer classes the built-in extractors serve, read from their
source files rather than imported: importing either brings in torch (seconds), and `teacli list-models` only needs
the names.

diffusers lists every public name in its `__init__.py`'s `_import_structure` (the table its lazy module answers
`dir()` from); a name whose backend is missing is exported as a dummy of the same name, so the literal lists are what
`dir(diffusers)` holds. The extractors name their class in an `extractor_for(...)` or `register_extractor(...)` call.
When a source cannot be read this way (a diffusers that changed its layout), the names come from importing it."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REGISTERING_CALLS = {"extractor_for", "register_extractor"}


@dataclass(frozen=True)
class DiffusersExports:
    version: str
    names: frozenset[str]  # the public names `dir(diffusers)` lists


@cache
def diffusers_exports() -> DiffusersExports:
    """The installed diffusers' version and exported names, from its `__init__.py` when it can be read so, else by
    importing it."""
    spec = importlib.util.find_spec("diffusers")
    if spec is not None and spec.origin:
        read = _exports_from_source(Path(spec.origin).read_text(encoding="utf-8"))
        if read is not None:
            return read
    import diffusers

    return DiffusersExports(diffusers.__version__, frozenset(dir(diffusers)))


def _exports_from_source(source: str) -> DiffusersExports | None:
    tree = ast.parse(source)
    version = next((_string(node.value) for node in tree.body if _assigns(node, "__version__")), None)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _assigns(node, "_import_structure") and isinstance(node.value, ast.Dict):
            names |= {name for value in node.value.values for name in _strings(value)}
        elif isinstance(node, ast.Assign) and any(_is_structure_entry(target) for target in node.targets):
            names |= _strings(node.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("append", "extend") and _is_structure_entry(node.func.value) and node.args:
                listed = ast.List(elts=node.args[:1]) if node.func.attr == "append" else node.args[0]
                names |= _strings(listed)
    return DiffusersExports(version, frozenset(names)) if version and names else None


def _assigns(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)


def _is_structure_entry(node: ast.AST) -> bool:
    """`_import_structure[...]`."""
    return isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "_import_structure"


def _string(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _strings(node: ast.AST) -> set[str]:
    """The string literals of a list or tuple literal (a comprehension over a dummy module is skipped: its names are
    the real ones')."""
    if not isinstance(node, (ast.List, ast.Tuple)):
        return set()
    return {text for element in node.elts if (text := _string(element)) is not None}


@cache
def builtin_extractor_classes() -> list[str]:
    """The transformer classes the built-in extractors (teacli.extractors) register, sorted, read from the modules
    the package imports (those not starting with `_`) without importing them."""
    spec = importlib.util.find_spec("teacli.extractors")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    classes: set[str] = set()
    for module in pkgutil.iter_modules(folders):
        if module.name.startswith("_") or module.ispkg:
            continue
        path = Path(module.module_finder.path) / f"{module.name}.py"  # type: ignore[union-attr]
        classes |= registered_classes(path.read_text(encoding="utf-8"))
    return sorted(classes)


def registered_classes(source: str) -> set[str]:
    """The class names a module's source registers: the first argument of each `extractor_for`/`register_extractor`
    call, when it is a string literal."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and _called_name(node.func) in REGISTERING_CALLS:
            if (name := _string(node.args[0])) is not None:
                found.add(name)
    return found


def _called_name(func: ast.AST) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None
