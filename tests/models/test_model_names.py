"""A model name that is no preset, file or folder and has no owner (owner/name) is refused at once, with no request
to the hub, naming the closest presets."""

from __future__ import annotations

import pytest

from teacli.cli import app
from teacli.models.catalog import all_presets
from teacli.models.loading import ModelError, resolve_preset
from teacli.models.resolve import closest_presets, unknown_name_message


@pytest.fixture
def no_hub(monkeypatch):
    """Every way resolve_preset reaches the hub fails the test: a refusal must come before any of them."""

    def reached(*args, **kwargs):
        raise AssertionError(f"the hub was asked: {args}")

    from diffusers import DiffusionPipeline

    monkeypatch.setattr(DiffusionPipeline, "load_config", reached)
    monkeypatch.setattr("diffusers.configuration_utils.hf_hub_download", reached)


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [("flux-deev", "flux-dev"), ("FLUX-DEV", "flux-dev"), ("fluxdev", "flux-dev"), ("teacli-shape", "teacli-shapes")],
)
def test_a_typo_is_refused_at_once_with_the_closest_presets(no_hub, typed, suggested):
    with pytest.raises(ModelError) as raised:
        resolve_preset(typed)
    message = str(raised.value)
    assert message.startswith(f"unknown model '{typed}': did you mean {suggested}")
    assert message.endswith("? (`teacli list-models` shows all)")


def test_the_suggestions_are_presets_closest_first():
    assert closest_presets("flux-deev")[0] == "flux-dev"
    assert set(closest_presets("flux-deev")) <= set(all_presets())
    assert len(closest_presets("flux-deev", count=2)) == 2
    # A short name close to none by ratio is offered the presets it begins.
    assert closest_presets("wan") and all(name.startswith("wan") for name in closest_presets("wan"))


def test_one_or_several_suggestions_read_as_a_sentence(monkeypatch):
    monkeypatch.setattr("teacli.models.resolve.closest_presets", lambda name: ["flux-dev"])
    assert unknown_name_message("x") == "unknown model 'x': did you mean flux-dev? (`teacli list-models` shows all)"
    monkeypatch.setattr("teacli.models.resolve.closest_presets", lambda name: ["a", "b", "c"])
    assert "did you mean a, b or c?" in unknown_name_message("x")


def test_a_name_close_to_nothing_says_what_a_model_name_can_be(no_hub):
    with pytest.raises(ModelError) as raised:
        resolve_preset("zzzzqqqq")
    message = str(raised.value)
    assert message.startswith("unknown model 'zzzzqqqq': not a preset, a preset file or a folder")
    assert "owner/name" in message and "`teacli list-models`" in message


def test_a_folder_or_a_file_without_a_slash_is_still_read_from_disk(tmp_path, monkeypatch):
    """Only a name that is nothing on disk is refused early: a folder named like a typo is still a model."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flux-deev").mkdir()
    with pytest.raises(ModelError) as raised:
        resolve_preset("flux-deev")  # a folder without model_index.json: diffusers' own check, no suggestion
    assert "did you mean" not in str(raised.value)


def test_a_hub_id_still_goes_to_the_hub(monkeypatch):
    asked = []

    def load_config(location, **kwargs):
        asked.append(location)
        raise OSError("not found")

    from diffusers import DiffusionPipeline

    monkeypatch.setattr(DiffusionPipeline, "load_config", load_config)
    with pytest.raises(ModelError):
        resolve_preset("someone/flux-deev")
    assert asked == ["someone/flux-deev"]


def test_the_cli_refuses_a_typo_in_one_line_without_loading(runner, no_hub, tmp_path):
    result = runner.invoke(app, ["generate", "a red circle", "--model", "flux-deev"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: unknown model 'flux-deev': did you mean flux-dev, flux2-dev or flux-kontext-dev? "
        "(`teacli list-models` shows all)"
    ], result.stderr
    assert list(tmp_path.iterdir()) == []
