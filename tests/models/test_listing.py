"""teacli list-models: the presets as a table that reads at 80 columns, filtered by a word, or as JSON."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from rich.cells import cell_len
from rich.console import Console

from teacli.cli import app
from teacli.models.catalog import all_presets, builtin_presets
from teacli.models.installed import (
    _exports_from_source,
    builtin_extractor_classes,
    diffusers_exports,
    registered_classes,
)
from teacli.models.listing import PREFERENCE, PresetListing, list_presets

JSON_FIELDS = {
    "name", "family", "model", "pipeline", "transformer", "coefficients_kind", "coefficients_source", "coefficients",
    "thresh", "steps", "available", "unavailable_because", "default", "test_model", "user", "source", "description",
}  # fmt: skip


@pytest.fixture(scope="module")
def listing():
    return list_presets()


def rendered(listing, width: int, wide: bool = False) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    listing.render(console, wide)
    return console.file.getvalue().splitlines()


def table_names(lines: list[str]) -> list[str]:
    return [line.split("│")[1].strip() for line in lines if line.startswith("│")]


def test_at_80_columns_every_name_is_whole_and_no_line_is_wider(listing):
    lines = rendered(listing, 80)
    assert max(cell_len(line) for line in lines) <= 80
    names = [name.split(" (")[0] for name in table_names(lines)]
    assert sorted(names) == sorted(builtin_presets())  # one line a preset, names never cut or folded
    header = next(line for line in lines if line.startswith("┃"))
    assert all(column in header for column in ("name", "coefficients", "thresh", "available"))
    assert any(line.startswith("not shown at this width: ") and "--wide" in line for line in lines)
    assert len(lines) < 130  # a line a preset, not 396 lines of folded words


def test_wider_consoles_show_more_columns_and_wide_shows_them_all(listing):
    def headers(lines):
        return [cell.strip() for cell in next(line for line in lines if line.startswith("┃")).split("┃")[1:-1]]

    narrow, wider, wide = headers(rendered(listing, 80)), headers(rendered(listing, 160)), rendered(listing, 80, True)
    assert set(narrow) < set(wider)
    assert headers(wide) == ["name", *sorted(PREFERENCE, key=headers(wide).index)] and len(headers(wide)) == 9
    assert not any(line.startswith("not shown") for line in wide)
    assert "black-forest-labs/FLUX.1-dev" in "\n".join(wide)


@pytest.mark.parametrize(
    "word,expected,unexpected",
    [
        ("FLUX", {"flux-dev", "flux2-dev", "teacli-shapes", "tiny-flux"}, {"wan2.1-t2v-14b"}),  # name, family
        ("wantransformer3dmodel", {"wan2.1-t2v-14b", "tiny-wan21"}, {"flux-dev"}),  # transformer class, any case
        ("QwenImageEditPipeline", {"qwen-image-edit"}, {"qwen-image"}),  # pipeline class
        ("hunyuan_video15", {"hunyuanvideo-1.5-480p"}, {"hunyuanvideo"}),  # family (the extractor)
        ("black-forest-labs", {"flux-dev", "flux2-dev"}, {"teacli-shapes"}),  # the model id
    ],
)
def test_a_word_filters_by_name_family_pipeline_transformer_or_model(word, expected, unexpected):
    names = {preset.name for preset in list_presets(word).presets}
    assert expected <= names and not unexpected & names


def test_json_has_every_preset_with_its_fields(runner):
    result = runner.invoke(app, ["list-models", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["filter"] is None and data["diffusers"]
    assert {entry["name"] for entry in data["presets"]} == set(builtin_presets())
    entries = {entry["name"]: entry for entry in data["presets"]}
    assert all(set(entry) == JSON_FIELDS for entry in entries.values())
    flux = entries["flux-dev"]
    assert (flux["family"], flux["pipeline"], flux["transformer"]) == ("flux", "FluxPipeline", "FluxTransformer2DModel")
    assert flux["coefficients_kind"] == "published"
    assert flux["coefficients"] == list(builtin_presets()["flux-dev"].coefficients)
    assert (flux["thresh"], flux["steps"], flux["available"], flux["user"]) == (0.25, 28, True, False)
    assert entries["teacli-shapes"]["default"] and entries["tiny-flux"]["test_model"]
    assert "FluxTransformer2DModel" in data["extractors"]


def test_json_with_a_filter_and_with_nothing_matching(runner):
    data = json.loads(runner.invoke(app, ["list-models", "kontext", "--json"]).stdout)
    assert data["filter"] == "kontext"
    assert [entry["name"] for entry in data["presets"]] == ["flux-kontext-dev", "tiny-flux-kontext"]
    nothing = runner.invoke(app, ["list-models", "no-such-family", "--json"])
    assert nothing.exit_code == 0 and json.loads(nothing.stdout)["presets"] == []


def test_a_word_matching_nothing_says_so_with_the_closest_names(runner):
    result = runner.invoke(app, ["list-models", "flux-deev"])
    assert result.exit_code == 0
    assert result.stdout.startswith("no preset matches 'flux-deev'") and "closest: flux-dev" in result.stdout
    assert "│" not in result.stdout


def test_the_cli_table_at_80_columns(runner, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = runner.invoke(app, ["list-models", "flux"], catch_exceptions=False)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    assert "matching 'flux'" in result.stdout and "flux-kontext-dev" in table_names(lines)
    assert "have an extractor" not in result.stdout  # the long class list is for the whole listing


def test_a_preset_this_diffusers_cannot_run_says_why(listing, monkeypatch):
    monkeypatch.setattr(listing, "diffusers_names", listing.diffusers_names - {"FluxKontextPipeline"})
    lines = rendered(listing, 80)
    row = next(line for line in lines if line.startswith("│ flux-kontext-dev "))
    assert row.rstrip(" │").endswith("no")
    assert "flux-kontext-dev cannot run here: FluxKontextPipeline not in this diffusers" in lines
    entry = listing.entry(builtin_presets()["flux-kontext-dev"])
    assert entry["available"] is False and entry["unavailable_because"] == "FluxKontextPipeline not in this diffusers"


# What the listing reads from source instead of importing (teacli.models.installed) must say what importing says.


def test_availability_read_from_source_is_what_importing_diffusers_says():
    import diffusers

    exports = diffusers_exports()
    assert exports.version == diffusers.__version__
    imported = set(dir(diffusers))
    for preset in all_presets().values():
        for name in (preset.pipeline, preset.transformer):
            assert (name in exports.names) == (name in imported), (preset.name, name)
    assert {name for name in imported if name[0].isupper()} - exports.names <= {"DummyObject"}


def test_the_listing_equals_one_built_by_importing_diffusers_and_the_extractors(listing):
    import diffusers

    from teacli.engine.registry import supported_classes

    imported = PresetListing(
        listing.presets, None, diffusers.__version__, set(dir(diffusers)), supported_classes(), listing.every_preset
    )
    assert imported.to_dict() == listing.to_dict()
    assert rendered(imported, 100, wide=True) == rendered(listing, 100, wide=True)


def test_extractor_classes_read_from_source_are_those_the_modules_register():
    from teacli.engine.registry import EXTRACTOR_REGISTRY, load_builtin_extractors

    load_builtin_extractors()
    builtin = {name for name, fn in EXTRACTOR_REGISTRY.items() if fn.__module__.startswith("teacli.extractors.")}
    static = builtin_extractor_classes()
    assert static == sorted(static) and len(static) >= 25
    assert builtin <= set(static) <= set(EXTRACTOR_REGISTRY)  # a test may have replaced a built-in with its own


def test_registrations_are_found_in_every_form_and_computed_names_are_not_guessed():
    source = """
from teacli.engine import registry
from teacli.engine.registry import extractor_for, register_extractor

@extractor_for("ADecorated", lora_kwargs="attention_kwargs")
def a(module): ...

register_extractor("BCalled", a)
registry.register_extractor("CThroughModule", a)
register_extractor(NAME, a)
"""
    assert registered_classes(source) == {"ADecorated", "BCalled", "CThroughModule"}


def test_a_diffusers_init_without_an_export_table_falls_back_to_importing():
    assert _exports_from_source('__version__ = "9.9"\nfrom .lazy import everything\n') is None
    table = """
__version__ = "9.9"
_import_structure = {"pipelines": [], "models": ["AModel"]}
_import_structure["pipelines"].extend(["APipeline", "BPipeline"])
_import_structure["models"].append("BModel")
_import_structure["utils.dummy_objects"] = [name for name in dir(dummy) if not name.startswith("_")]
"""
    exports = _exports_from_source(table)
    assert exports.version == "9.9" and exports.names == {"AModel", "APipeline", "BPipeline", "BModel"}


@pytest.mark.parametrize("arguments", [["list-models"], ["list-models", "--json"], ["list-models", "flux"]])
def test_listing_imports_no_torch_diffusers_or_transformers(arguments):
    child = (
        "import sys\n"
        f"sys.argv = ['teacli', *{arguments!r}]\n"
        "from teacli.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"
    assert "flux-dev" in done.stdout
