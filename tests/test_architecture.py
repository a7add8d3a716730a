"""The package map holds (docs/architecture.md): each layer imports only the layers below it, no module imports
itself back through others, modules and functions stay small, and every package ships."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "teacli"

# Lower layers never import higher ones; packages on one layer never import each other.
# (docs/architecture.md draws this map.)
LAYERS = {
    "teacli.errors": 0,
    "teacli.limits": 0,
    "teacli.files": 0,
    "teacli.signals": 0,  # Ctrl-C and SIGTERM as KeyboardInterrupt, held while heavy libraries import
    "teacli.terminal": 0.2,  # stdout kept for a JSON report, a dead stdout, one line for an unforeseen failure
    "teacli.tables": 0.2,  # tables that read at any terminal width: naming columns whole, the rest stacked
    "teacli.settings": 0.5,  # the generation settings table: ranges from limits; catalog and generation use it
    "teacli.engine": 1,
    "teacli.models": 2,
    "teacli.environment": 2.5,  # teacli env: versions, the device models.devices picks, the extras installed
    "teacli.generation": 3,
    "teacli.demo": 3.5,  # the demo model: its training and evaluation run generations; bench scores with its checker
    "teacli.batch": 4,
    "teacli.bench": 4,
    "teacli.calibrate": 4,
    "teacli.cli": 5,
}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_CLI_LINES = 1000


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str) -> set[str]:
    """Every teacli module `path` imports, at the top or inside a function (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    typing_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    known = modules()
    return {module for module in found if module in known and module != name}


def layer(module: str) -> tuple[str, int] | None:
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return prefix, rank
    return None


def test_every_module_sits_on_a_layer():
    unplaced = [name for name in modules() if name not in ("teacli", "teacli.__main__") and layer(name) is None]
    assert unplaced == []


def test_no_layer_imports_a_higher_or_sibling_package():
    wrong = []
    for name, path in modules().items():
        own = layer(name)
        if own is None:
            continue
        for target in imported(path, name):
            other = layer(target)
            if other is None or other[0] == own[0]:
                continue
            if other[1] >= own[1]:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_no_import_cycles():
    graph = {name: imported(path, name) for name, path in modules().items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    # A package's __init__ re-exporting its modules is not a cycle of behaviour.
    assert [cycle for cycle in cycles if not cycle.split(" -> ")[0] == cycle.split(" -> ")[-1] == "teacli"] == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda path: module_name(path))
def test_modules_and_functions_stay_small(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_every_package_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {module_name(init) for init in PACKAGE.rglob("__init__.py")}
    assert packages - listed == set()


def test_the_cli_only_parses_calls_and_renders():
    """Each command checks its options, calls one library function and renders: the whole CLI stays small."""
    lines = sum(len(path.read_text().splitlines()) for path in (PACKAGE / "cli").glob("*.py"))
    assert lines < MAX_CLI_LINES
