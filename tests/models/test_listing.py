"""teacli list-models: the presets as a table that reads at 80 columns, filtered by a word, or as JSON."""

from __future__ import annotations

import io
import json

import pytest
from rich.cells import cell_len
from rich.console import Console

from teacli.cli import app
from teacli.models.catalog import builtin_presets
from teacli.models.listing import PREFERENCE, list_presets

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
