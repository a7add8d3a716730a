"""The README's front-door claims stay true: every preset and extractor is in the supported-models table."""

from pathlib import Path

from teacli.engine.registry import EXTRACTOR_REGISTRY, supported_classes
from teacli.models.catalog import builtin_presets

README = Path(__file__).resolve().parent.parent / "README.md"


def supported_models_table() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Supported models", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("| "))


def test_every_preset_and_extractor_is_in_the_supported_models_table():
    table = supported_models_table()
    for preset in builtin_presets().values():
        assert f"`{preset.name}`" in table, f"README's supported models table lacks {preset.name}"
    # Tests register toy extractors too; the table covers the built-in ones.
    builtin = [name for name in supported_classes() if EXTRACTOR_REGISTRY[name].__module__.startswith("teacli.")]
    assert len(builtin) >= 15
    for class_name in builtin:
        assert f"`{class_name}`" in table, f"README's supported models table lacks {class_name}"


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
        assert kind == preset.coefficients_kind, f"{preset.name}: README says {kind}"


def test_end_to_end_column_names_real_tiny_presets():
    presets = builtin_presets()
    for row in supported_models_table().splitlines()[2:]:
        cell = row.split("|")[4]
        for name in (part.strip(" `") for part in cell.split("(")[0].split(",")):
            if name != "fidelity test only":
                assert name in presets and presets[name].is_test_model, name
