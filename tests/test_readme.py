"""The front door and the reference pages stay true: README.md is short and its commands are the ones CI and the
tests use; every preset and extractor is in docs/models.md's supported-models table; every link between the pages
leads somewhere; the `quick` subset names tests that exist."""

import ast
import re
from pathlib import Path

import pytest
from conftest import QUICK_TESTS

from teacli.engine.registry import EXTRACTOR_REGISTRY, supported_classes
from teacli.models.catalog import builtin_presets

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MODELS = ROOT / "docs" / "models.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FRONT_DOOR_WORDS = 1500  # about five minutes' reading
LINK = re.compile(r"\]\(([^)\s]+)\)")


def supported_models_table() -> str:
    text = MODELS.read_text(encoding="utf-8")
    section = text.split("## Supported models", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("| "))


def test_every_preset_and_extractor_is_in_the_supported_models_table():
    table = supported_models_table()
    for preset in builtin_presets().values():
        assert f"`{preset.name}`" in table, f"docs/models.md's supported models table lacks {preset.name}"
    # Tests register toy extractors too; the table covers the built-in ones.
    builtin = [name for name in supported_classes() if EXTRACTOR_REGISTRY[name].__module__.startswith("teacli.")]
    assert len(builtin) >= 15
    for class_name in builtin:
        assert f"`{class_name}`" in table, f"docs/models.md's supported models table lacks {class_name}"


def test_the_table_says_published_only_for_published_presets():
    rows = supported_models_table().splitlines()
    for preset in builtin_presets().values():
        if preset.is_test_model:
            continue
        row = next(row for row in rows if f"`{preset.name}`" in row)
        cell = row.split("|")[3]
        after = cell.split(f"`{preset.name}`", 1)[1]
        # The kind is the first word in parentheses after the name (or after the group of names).
        kind = after[after.index("(") + 1 :].split(maxsplit=1)[0].strip(",)")
        assert kind == preset.coefficients_kind, f"{preset.name}: docs/models.md says {kind}"


def test_end_to_end_column_names_real_tiny_presets():
    presets = builtin_presets()
    for row in supported_models_table().splitlines()[2:]:
        cell = row.split("|")[4]
        for name in (part.strip(" `") for part in cell.split("(")[0].split(",")):
            if name != "fidelity test only":
                assert name in presets and presets[name].is_test_model, name


# --- the front door -----------------------------------------------------------------------------------------


def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_the_readme_reads_in_five_minutes():
    prose = re.sub(r"```.*?```", "", readme(), flags=re.S)  # commands are read at a glance
    assert len(prose.split()) <= FRONT_DOOR_WORDS


def test_the_readme_runs_the_test_command_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "export HF_HUB_OFFLINE=1" in ci and "python -m pytest -q" in ci
    assert "HF_HUB_OFFLINE=1 python -m pytest -q\n" in readme().replace("  ", "").replace(" #", "\n#")
    assert "HF_HUB_OFFLINE=1 python -m pytest -q -m quick" in readme()


def test_the_gpu_section_names_real_presets_and_says_its_figures_are_estimates():
    section = readme().split("## On a GPU with a real model", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"--model ([\w.-]+)", section)) | set(re.findall(r"\(`([a-z][\w.-]+)`", section))
    assert {"flux-dev", "flux-schnell", "qwen-image", "wan2.1-t2v-14b", "wan2.1-t2v-1.3b", "hunyuanvideo"} <= named
    assert {"ltx-video", "sd3.5-large", "sd3.5-medium"} <= named
    assert named <= builtin_presets().keys(), named - builtin_presets().keys()
    assert "hf auth login" in section and "estimates, not measurements" in section


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#+ ", line)}


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_link_between_the_pages_leads_somewhere(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        if fragment and linked.suffix == ".md":
            assert fragment in anchors(linked), f"{page.name} links to {target}: no such heading"


def test_the_readme_links_every_reference_page():
    linked = set(LINK.findall(readme()))
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"


# --- the quick subset ---------------------------------------------------------------------------------------


def test_the_quick_subset_names_tests_that_exist():
    assert len(QUICK_TESTS) >= 5
    for entry in QUICK_TESTS:
        path, _, name = entry.partition("::")
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"tests/conftest.py's QUICK_TESTS names {entry}, which is no test"
