"""Presets: the built-in YAML files, validation errors that name file and field, and resolve_preset."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml

from teacli.engine.registry import has_extractor
from teacli.models.catalog import (
    Defaults,
    PresetError,
    builtin_presets,
    find_preset,
    load_preset_file,
    presets_for_transformer,
)
from teacli.models.loading import ModelError, check_extractor, pick_device, pick_dtype, resolve_preset

BUILTIN_NAMES = ("flux-dev", "flux-schnell", "tiny-flux")
# ali-vilab/TeaCache, TeaCache4FLUX/teacache_flux.py, highest power first.
TEACACHE4FLUX = (4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01)

MISSING = object()  # marks a field to drop from VALID

VALID = {
    "name": "my-flux",
    "description": "a preset written by the tests",
    "model": "someone/my-flux",
    "pipeline": "FluxPipeline",
    "transformer": "FluxTransformer2DModel",
    "extractor": "flux",
    "coefficients": list(TEACACHE4FLUX),
    "coefficients_source": "copied from TeaCache4FLUX",
    "thresh": 0.3,
    "defaults": {"steps": 20, "guidance": 3.5, "height": 512, "width": 512},
}


def write_preset(directory: Path, changes: dict | None = None, filename: str = "my-flux.yaml") -> Path:
    data = {**VALID, **(changes or {})}
    data = {key: value for key, value in data.items() if value is not MISSING}
    path = directory / filename
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_text(directory: Path, text: str, filename: str = "preset.yaml") -> Path:
    path = directory / filename
    path.write_text(text, encoding="utf-8")
    return path


def write_model_index(directory: Path, **components) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": "FluxPipeline", "_diffusers_version": "0.42.0", **components}
    (directory / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return directory


# --- built-in presets -----------------------------------------------------------------------------


def test_builtin_presets_include_the_flux_family():
    assert set(BUILTIN_NAMES) <= set(builtin_presets())


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_flux_presets_use_five_teacache4flux_coefficients(name):
    preset = builtin_presets()[name]
    assert len(preset.coefficients) == 5
    assert preset.coefficients == TEACACHE4FLUX
    assert preset.transformer == "FluxTransformer2DModel"
    assert preset.pipeline == "FluxPipeline"
    assert preset.thresh >= 0


def test_flux_dev_matches_the_published_preset():
    preset = builtin_presets()["flux-dev"]
    assert preset.model == "black-forest-labs/FLUX.1-dev"
    assert preset.coefficients == TEACACHE4FLUX
    assert "TeaCache4FLUX" in preset.coefficients_source
    assert preset.defaults.steps == 28


def test_every_builtin_preset_has_an_extractor():
    for preset in builtin_presets().values():
        assert has_extractor(preset.transformer), preset.name
        check_extractor(preset)  # does not raise


def test_builtin_presets_are_package_data_of_teacli_presets():
    package = resources.files("teacli.presets")
    files = {entry.name for entry in package.iterdir() if entry.name.endswith((".yaml", ".yml"))}
    assert {f"{name}.yaml" for name in BUILTIN_NAMES} <= files
    assert len(builtin_presets()) == len(files)
    for preset in builtin_presets().values():
        assert Path(preset.source).is_file()
        assert Path(preset.source).name in files
        assert Path(preset.source).parent == Path(str(package))


def test_builtin_presets_are_loaded_once():
    assert builtin_presets() is builtin_presets()


def test_embedded_model_and_optional_fields():
    presets = builtin_presets()
    assert presets["tiny-flux"].embedded == "tiny-flux"
    assert presets["flux-dev"].embedded is None
    assert presets["flux-schnell"].call_kwargs == {"max_sequence_length": 256}
    assert presets["flux-schnell"].defaults == Defaults(steps=4, guidance=0.0, height=1024, width=1024)
    assert presets["flux-dev"].call_kwargs == {}
    assert presets["flux-dev"].rel_l1_range is None


def test_find_preset_by_name_or_model_field():
    presets = builtin_presets()
    assert find_preset("flux-schnell") is presets["flux-schnell"]
    assert find_preset("black-forest-labs/FLUX.1-schnell") is presets["flux-schnell"]
    assert find_preset("embedded:tiny-flux") is presets["tiny-flux"]
    assert find_preset("no-such-model") is None


def test_presets_for_transformer():
    names = {preset.name for preset in presets_for_transformer("FluxTransformer2DModel")}
    assert set(BUILTIN_NAMES) <= names
    assert presets_for_transformer("NoSuchTransformer2DModel") == []


# --- loading a preset file ------------------------------------------------------------------------


def test_valid_preset_file_loads(tmp_path):
    optional = {"ret_steps": 1, "cutoff_steps": 18, "rel_l1_range": [0.05, 0.5]}
    path = write_preset(tmp_path, {**optional, "call_kwargs": {"max_sequence_length": 64}})
    preset = load_preset_file(path)
    assert preset.name == "my-flux"
    assert preset.model == "someone/my-flux"
    assert preset.coefficients == TEACACHE4FLUX
    assert all(isinstance(c, float) for c in preset.coefficients)
    assert preset.thresh == 0.3
    assert preset.defaults == Defaults(steps=20, guidance=3.5, height=512, width=512)
    assert preset.ret_steps == 1
    assert preset.cutoff_steps == 18
    assert preset.rel_l1_range == (0.05, 0.5)
    assert preset.call_kwargs == {"max_sequence_length": 64}
    assert preset.source == str(path)
    assert preset.embedded is None


def test_optional_fields_take_their_defaults(tmp_path):
    preset = load_preset_file(write_preset(tmp_path, {"description": MISSING, "defaults": {"steps": 2}}))
    assert preset.description == ""
    assert preset.defaults == Defaults(steps=2)
    assert preset.ret_steps == 0
    assert preset.cutoff_steps is None
    assert preset.rel_l1_range is None
    assert preset.call_kwargs == {}


INVALID = [
    pytest.param({"model": MISSING}, "model", id="missing-model"),
    pytest.param({"name": MISSING}, "name", id="missing-name"),
    pytest.param({"coefficients_source": MISSING}, "coefficients_source", id="missing-coefficients_source"),
    pytest.param({"thresh": MISSING}, "thresh", id="missing-thresh"),
    pytest.param({"model": 42}, "model", id="model-not-a-string"),
    pytest.param({"pipeline": "  "}, "pipeline", id="pipeline-blank"),
    pytest.param({"thresh": "high"}, "thresh", id="thresh-string"),
    pytest.param({"thresh": True}, "thresh", id="thresh-bool"),
    pytest.param({"thresh": -0.1}, "thresh", id="thresh-negative"),
    pytest.param({"thresh": float("nan")}, "thresh", id="thresh-nan"),
    pytest.param({"coefficients": MISSING}, "coefficients", id="coefficients-missing"),
    pytest.param({"coefficients": "1.0, 2.0, 3.0"}, "coefficients", id="coefficients-not-a-list"),
    pytest.param({"coefficients": {"a": 1.0}}, "coefficients", id="coefficients-mapping"),
    pytest.param({"coefficients": [1.0]}, "coefficients", id="coefficients-too-few"),
    pytest.param({"coefficients": [1.0] * 8}, "coefficients", id="coefficients-too-many"),
    pytest.param({"coefficients": [1.0, "x", 2.0]}, "coefficients", id="coefficients-non-numeric"),
    pytest.param({"coefficients": [1.0, None]}, "coefficients", id="coefficients-null"),
    pytest.param({"defaults": MISSING}, "defaults", id="defaults-missing"),
    pytest.param({"defaults": [28]}, "defaults", id="defaults-not-a-mapping"),
    pytest.param({"defaults": {"guidance": 3.5}}, "defaults.steps", id="defaults-steps-missing"),
    pytest.param({"defaults": {"steps": 1}}, "defaults.steps", id="defaults-steps-below-2"),
    pytest.param({"defaults": {"steps": 2.5}}, "defaults.steps", id="defaults-steps-not-integer"),
    pytest.param({"defaults": {"steps": 20, "seed": 3}}, "defaults.seed", id="defaults-unknown-key"),
    pytest.param({"steps": 20}, "steps", id="unknown-top-level-field"),
    pytest.param({"source": "elsewhere.yaml"}, "source", id="source-is-not-settable"),
    pytest.param({"ret_steps": -1}, "ret_steps", id="ret_steps-negative"),
    pytest.param({"cutoff_steps": 0}, "cutoff_steps", id="cutoff_steps-zero"),
    pytest.param({"rel_l1_range": [0.5, 0.1]}, "rel_l1_range", id="rel_l1_range-low-above-high"),
    pytest.param({"rel_l1_range": [0.1]}, "rel_l1_range", id="rel_l1_range-one-value"),
    pytest.param({"rel_l1_range": [-0.1, 0.2]}, "rel_l1_range", id="rel_l1_range-negative"),
    pytest.param({"call_kwargs": ["max_sequence_length"]}, "call_kwargs", id="call_kwargs-list"),
    pytest.param({"call_kwargs": {1: 2}}, "call_kwargs", id="call_kwargs-non-string-key"),
    pytest.param({"needs_image": "yes"}, "needs_image", id="needs_image-not-a-bool"),
    pytest.param({"components": ["text_encoder"]}, "components", id="components-list"),
    pytest.param({"components": {"te": "x/y"}}, "components.te", id="components-entry-not-a-mapping"),
    pytest.param({"components": {"te": {"model": "x/y"}}}, "components.te.class", id="components-class-missing"),
    pytest.param({"components": {"te": {"class": "A"}}}, "components.te.model", id="components-model-missing"),
    pytest.param(
        {"components": {"te": {"class": "A", "model": "m", "x": 1}}}, "components.te.x", id="components-unknown"
    ),
    pytest.param(
        {"components": {"te": {"class": "A", "model": "m", "kwargs": [1]}}}, "components.te.kwargs", id="components-kw"
    ),
]


@pytest.mark.parametrize(("changes", "field"), INVALID)
def test_invalid_field_names_file_and_field(tmp_path, changes, field):
    path = write_preset(tmp_path, changes)
    with pytest.raises(PresetError) as raised:
        load_preset_file(path)
    message = str(raised.value)
    assert str(path) in message
    assert f"field '{field}'" in message


@pytest.mark.parametrize("key", ["guidance", "height", "width", "true_cfg"])
def test_invalid_optional_default_is_named_with_its_defaults_prefix(tmp_path, key):
    path = write_preset(tmp_path, {"defaults": {"steps": 20, key: -1}})
    with pytest.raises(PresetError, match=rf"field 'defaults\.{key}'"):
        load_preset_file(path)


def test_yaml_exponent_without_a_dot_is_read_as_a_number(tmp_path):
    # YAML 1.1 resolves 1e-3 to a string; a preset author means the number.
    path = write_preset(tmp_path, {"thresh": "1e-3"})
    assert load_preset_file(path).thresh == 0.001


@pytest.mark.parametrize("value", [[], False, 0, ""], ids=["empty-list", "false", "zero", "empty-string"])
def test_falsy_call_kwargs_that_is_not_a_mapping_is_rejected(tmp_path, value):
    path = write_preset(tmp_path, {"call_kwargs": value})
    with pytest.raises(PresetError, match="field 'call_kwargs'"):
        load_preset_file(path)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- name: my-flux\n- model: x\n", "list"), ("just a string\n", "str"), ("", "NoneType")],
    ids=["yaml-list", "yaml-scalar", "empty-file"],
)
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    path = write_text(tmp_path, text)
    with pytest.raises(PresetError) as raised:
        load_preset_file(path)
    message = str(raised.value)
    assert str(path) in message
    assert "expected a mapping" in message
    assert kind in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: my-flux\nmodel: x\n  pipeline: FluxPipeline\n", 3),
        ("name: my-flux\nmodel: x\nthresh: [0.25\ndefaults: {steps: 4}\n", 4),
    ],
    ids=["bad-indent", "unclosed-flow-list"],
)
def test_invalid_yaml_names_file_and_line(tmp_path, text, line):
    path = write_text(tmp_path, text)
    with pytest.raises(PresetError) as raised:
        load_preset_file(path)
    message = str(raised.value)
    assert str(path) in message
    assert "not valid YAML" in message
    assert f"line {line}" in message


def test_missing_file_cannot_be_read(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(PresetError, match="cannot be read") as raised:
        load_preset_file(path)
    assert str(path) in str(raised.value)


def test_directory_cannot_be_read(tmp_path):
    path = tmp_path / "folder.yaml"
    path.mkdir()
    with pytest.raises(PresetError, match="cannot be read") as raised:
        load_preset_file(path)
    assert str(path) in str(raised.value)


def test_non_utf8_file_is_a_preset_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PresetError) as raised:
        load_preset_file(path)
    assert str(path) in str(raised.value)


# --- resolve_preset -------------------------------------------------------------------------------


def test_resolve_none_is_the_default_teacli_shapes():
    assert resolve_preset(None) is builtin_presets()["teacli-shapes"]


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("flux-dev", "flux-dev"),
        ("flux-schnell", "flux-schnell"),
        ("tiny-flux", "tiny-flux"),
        ("black-forest-labs/FLUX.1-dev", "flux-dev"),
        ("black-forest-labs/FLUX.1-schnell", "flux-schnell"),
        ("embedded:tiny-flux", "tiny-flux"),
    ],
)
def test_resolve_a_preset_name_or_its_model(model, name):
    assert resolve_preset(model) is builtin_presets()[name]


@pytest.mark.parametrize("filename", ["my-flux.yaml", "my-flux.yml"])
def test_resolve_a_preset_file(tmp_path, filename):
    path = write_preset(tmp_path, filename=filename)
    preset = resolve_preset(str(path))
    assert preset.name == "my-flux"
    assert preset.source == str(path)
    assert preset.coefficients == TEACACHE4FLUX


def test_resolve_an_invalid_preset_file_is_a_preset_error(tmp_path):
    path = write_preset(tmp_path, {"thresh": "high"})
    with pytest.raises(PresetError, match="field 'thresh'"):
        resolve_preset(str(path))


def test_resolve_a_missing_preset_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ModelError, match="does not exist") as raised:
        resolve_preset(str(path))
    assert str(path) in str(raised.value)


def test_resolve_an_unknown_name_points_to_the_list_of_presets():
    with pytest.raises(ModelError) as raised:
        resolve_preset("no-such-model")
    message = str(raised.value)
    assert "no-such-model" in message and "`teacli list-models`" in message
    # One line a terminal can show: the 80-odd preset names are list-models' job.
    assert len(message) < 250


def test_resolve_a_local_flux_pipeline_borrows_flux_dev(tmp_path):
    flux = ["diffusers", "FluxTransformer2DModel"]
    directory = write_model_index(tmp_path / "my-pipeline", transformer=flux)
    preset = resolve_preset(str(directory))
    donor = builtin_presets()["flux-dev"]
    assert preset.name == str(directory)
    assert preset.model == str(directory)
    assert preset.pipeline == "FluxPipeline"
    assert preset.transformer == "FluxTransformer2DModel"
    assert preset.coefficients == donor.coefficients == TEACACHE4FLUX
    assert preset.defaults == donor.defaults
    assert preset.thresh == donor.thresh
    assert preset.coefficients_source.startswith("borrowed from flux-dev")
    assert preset.source == ""
    check_extractor(preset)  # does not raise


def test_resolve_a_local_pipeline_with_an_unsupported_transformer(tmp_path):
    unet = ["diffusers", "UNet2DConditionModel"]
    directory = write_model_index(tmp_path / "unet-pipeline", transformer=unet)
    with pytest.raises(ModelError, match="UNet2DConditionModel"):
        resolve_preset(str(directory))


def test_resolve_a_local_pipeline_without_a_transformer(tmp_path):
    directory = write_model_index(tmp_path / "sd-pipeline", unet=["diffusers", "UNet2DConditionModel"])
    with pytest.raises(ModelError, match="no transformer component"):
        resolve_preset(str(directory))


# --- check_extractor, devices and dtypes ----------------------------------------------------------


def test_check_extractor_names_a_transformer_without_extractor():
    flux_dev = builtin_presets()["flux-dev"]
    preset = replace(flux_dev, transformer="MadeUpTransformer2DModel")
    with pytest.raises(PresetError) as raised:
        check_extractor(preset)
    message = str(raised.value)
    assert "MadeUpTransformer2DModel" in message
    assert "field 'transformer'" in message
    assert flux_dev.source in message


def test_pick_dtype():
    assert pick_dtype("auto", torch.device("cpu")) is torch.float32
    assert pick_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert pick_dtype("float16", torch.device("cpu")) is torch.float16
    assert pick_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16
    assert pick_dtype("float32", torch.device("cuda")) is torch.float32


def test_pick_device_cpu():
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_pick_device_cuda_without_cuda():
    with pytest.raises(ModelError, match="no CUDA GPU"):
        pick_device("cuda")


def test_components_are_loaded_separately_and_passed_to_the_pipeline(teacli_cache, tmp_path, monkeypatch):
    import transformers

    from teacli.models.embedded import embedded_model_path
    from teacli.models.loading import load_pipeline

    tiny = embedded_model_path("tiny-flux")
    calls = []
    original = transformers.CLIPTextModel.from_pretrained.__func__

    def spy(cls, location, **kwargs):
        calls.append((location, kwargs))
        return original(cls, location, **kwargs)

    monkeypatch.setattr(transformers.CLIPTextModel, "from_pretrained", classmethod(spy))
    component = {"class": "CLIPTextModel", "model": str(tiny), "subfolder": "text_encoder"}
    preset = load_preset_file(
        write_preset(tmp_path, {"model": str(tiny), "components": {"text_encoder": {**component, "kwargs": {}}}})
    )
    pipe = load_pipeline(preset, torch.device("cpu"), torch.float32)
    assert type(pipe.text_encoder).__name__ == "CLIPTextModel"
    # Ours is the only load: from_pretrained of the pipeline took the component as given.
    # safetensors only; a directory on disk is read without asking the hub
    expected = {"subfolder": "text_encoder", "dtype": torch.float32, "use_safetensors": True, "local_files_only": True}
    assert calls == [(str(tiny), expected)]


def test_component_class_that_does_not_exist_names_the_field(tmp_path):
    from teacli.models.loading import load_pipeline

    preset = load_preset_file(write_preset(tmp_path, {"components": {"text_encoder": {"class": "Nope", "model": "m"}}}))
    with pytest.raises(PresetError, match=r"field 'components.text_encoder.class': Nope is in neither"):
        load_pipeline(preset, torch.device("cpu"), torch.float32)
