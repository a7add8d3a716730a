"""Loading runs no code from a model or a preset: safetensors only unless allow_pickle, no remote code,
presets are plain data whose class names are looked up, never imported."""

import ast
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from teacli.models.catalog import PresetError, builtin_presets, load_preset_file, parse_preset, preset_to_dict
from teacli.models.loading import ModelError, check_extractor, load_pipeline, resolve_preset
from teacli.models.weights import pickle_only_components

CPU = torch.device("cpu")
PACKAGE = Path(__file__).resolve().parents[2]
SENTINEL = "teacli_sentinel_payload"  # a module whose import leaves a file behind


@pytest.fixture
def sentinel(tmp_path, monkeypatch) -> Path:
    """An importable module that writes a marker file when imported; returns the marker's path."""
    marker = tmp_path / "imported"
    (tmp_path / f"{SENTINEL}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\nflux_context = system = None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, SENTINEL, raising=False)
    yield marker
    assert SENTINEL not in sys.modules and not marker.exists(), "the sentinel module was imported"


def preset_data(**changes):
    return preset_to_dict(builtin_presets()["tiny-flux"]) | changes


# --- safetensors only ----------------------------------------------------------------------------------


def test_pickle_only_checkpoint_is_refused_without_allow_pickle(pickled_flux):
    preset = resolve_preset(str(pickled_flux))  # a local pipeline directory: flux-dev's coefficients are borrowed
    with pytest.raises(ModelError) as refused:
        load_pipeline(preset, CPU, torch.float32)
    assert str(refused.value) == (
        f"{pickled_flux} has no safetensors weights for transformer, vae (only pickle files, which can run code when "
        "loaded); pass allow_pickle only if you trust its files"
    )
    # The CLI words the field as its flag (teacli.errors).
    assert refused.value.worded({"allow_pickle": "--allow-pickle"}) == (
        f"{pickled_flux} has no safetensors weights for transformer, vae (only pickle files, which can run code when "
        "loaded); pass --allow-pickle only if you trust its files"
    )


def test_allow_pickle_loads_the_same_weights(pickled_flux, tiny_flux_pipe):
    pipe = load_pipeline(resolve_preset(str(pickled_flux)), CPU, torch.float32, allow_pickle=True)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        mine, reference = getattr(pipe, name).state_dict(), getattr(tiny_flux_pipe, name).state_dict()
        assert mine.keys() == reference.keys() and len(mine) > 0
        assert all(torch.equal(mine[key], reference[key]) for key in mine), name


def test_a_preset_component_with_pickle_weights_is_refused_by_name(pickled_flux, tiny_flux_pipe):
    component = {"class": "FluxTransformer2DModel", "model": str(pickled_flux), "subfolder": "transformer"}
    preset = parse_preset(preset_data(components={"transformer": component}), "inline.yaml")
    with pytest.raises(ModelError) as refused:
        load_pipeline(preset, CPU, torch.float32)
    assert str(refused.value).startswith(
        f"{pickled_flux} has no safetensors weights for transformer (only pickle files"
    )
    pipe = load_pipeline(preset, CPU, torch.float32, allow_pickle=True)
    reference = tiny_flux_pipe.transformer.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in pipe.transformer.state_dict().items())


def test_from_pretrained_gets_safetensors_only_and_never_remote_code(tiny_flux_dir, monkeypatch):
    from diffusers import FluxPipeline, FluxTransformer2DModel

    seen = []
    for cls in (FluxPipeline, FluxTransformer2DModel):
        real = cls.from_pretrained.__func__

        def spy(klass, *args, _real=real, **kwargs):
            seen.append((klass.__name__, kwargs))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    component = {"class": "FluxTransformer2DModel", "model": str(tiny_flux_dir), "subfolder": "transformer"}
    preset = parse_preset(preset_data(components={"transformer": component}), "inline.yaml")
    load_pipeline(preset, CPU, torch.float32)
    load_pipeline(preset, CPU, torch.float32, allow_pickle=True)
    assert [name for name, _ in seen] == ["FluxTransformer2DModel", "FluxPipeline"] * 2
    assert [kwargs["use_safetensors"] for _, kwargs in seen] == [True, True, None, None]
    assert all(kwargs["local_files_only"] is True for _, kwargs in seen)  # a directory on disk asks no hub
    assert not any(kwargs.get("trust_remote_code") or "custom_pipeline" in kwargs for _, kwargs in seen)


def test_components_the_preset_loads_itself_are_not_read_from_the_checkpoint(pickled_flux, tiny_flux_dir):
    component = {"class": "FluxTransformer2DModel", "model": str(tiny_flux_dir), "subfolder": "transformer"}
    preset = parse_preset(preset_data(model=str(pickled_flux), components={"transformer": component}), "inline.yaml")
    with pytest.raises(ModelError, match=rf"^{pickled_flux} has no safetensors weights for vae \(only pickle"):
        load_pipeline(preset, CPU, torch.float32)


def test_hub_errors_about_missing_safetensors_name_the_components():
    from teacli.models.weights import _pickle_components

    listing = OSError(
        "Could not find the necessary `safetensors` weights in {'model_index.json', 'transformer/model.bin', "
        "'vae/diffusion_pytorch_model.safetensors', 'text_encoder/pytorch_model.bin'} (variant=None)"
    )
    assert _pickle_components("org/model", listing) == ["text_encoder", "transformer"]
    one = OSError("Error no file named diffusion_pytorch_model.safetensors found in directory /cache/snap/vae.")
    assert _pickle_components("org/model", one) == ["vae"]


def test_pickle_only_components_groups_by_folder():
    files = ["model_index.json", "a/x.bin", "b/x.safetensors", "b/x.bin", "c/x.pt", "c/config.json", "top.ckpt"]
    assert pickle_only_components(files) == [".", "a", "c"]
    assert pickle_only_components(["t/m.safetensors.index.json", "t/m-00001.bin"]) == []
    assert pickle_only_components(["t/pytorch_model.bin.index.json"]) == ["t"]


# --- no code from the model's repository -----------------------------------------------------------------


def copy_with_code(source: Path, target: Path, code_dir: str, module: str, marker: Path) -> Path:
    shutil.copytree(source, target)
    (target / code_dir / f"{module}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from diffusers import FluxPipeline, FluxTransformer2DModel\n"
    )
    return target


def test_a_component_shipped_as_code_is_refused_and_not_run(tiny_flux_dir, tmp_path):
    marker = tmp_path / "ran"
    model = copy_with_code(tiny_flux_dir, tmp_path / "m", "transformer", "evil_module", marker)
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(
        json.dumps(index | {"transformer": ["evil_module", index["transformer"][1]]})
    )
    with pytest.raises(ModelError) as refused:
        load_pipeline(resolve_preset(str(model)), CPU, torch.float32)
    assert "custom code in evil_module.py" in str(refused.value)
    assert str(refused.value).endswith("(teacli never runs code from a model repository)")
    assert not marker.exists()


def test_a_pipeline_shipped_as_code_is_refused_and_not_run(tiny_flux_dir, tmp_path):
    marker = tmp_path / "ran"
    model = copy_with_code(tiny_flux_dir, tmp_path / "m", ".", "evil_pipe", marker)
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps(index | {"_class_name": ["evil_pipe", "FluxPipeline"]}))
    with pytest.raises(ModelError, match=r"names its own pipeline code \(\['evil_pipe', 'FluxPipeline'\]\)"):
        resolve_preset(str(model))
    # A preset naming the diffusers class does not make diffusers run the file either.
    with pytest.raises(ModelError, match="custom code in evil_pipe.py"):
        load_pipeline(replace(builtin_presets()["flux-dev"], model=str(model)), CPU, torch.float32)
    assert not marker.exists()


@pytest.mark.parametrize("key", ["trust_remote_code", "custom_pipeline", "custom_revision", "code_revision"])
def test_preset_component_kwargs_that_run_code_are_refused(key):
    component = {"class": "LlamaForCausalLM", "model": "m", "kwargs": {"output_hidden_states": True, key: True}}
    with pytest.raises(PresetError) as refused:
        parse_preset(preset_data(components={"text_encoder_4": component}), "p.yaml")
    assert str(refused.value) == (
        f"preset p.yaml: field 'components.text_encoder_4.kwargs.{key}': teacli never runs code from a model "
        "repository; remove it"
    )


@pytest.mark.parametrize("value", [False, None, "no"])
def test_preset_component_cannot_turn_safetensors_off(value):
    component = {"class": "LlamaForCausalLM", "model": "m", "kwargs": {"use_safetensors": value}}
    with pytest.raises(PresetError, match=r"field 'components.te.kwargs.use_safetensors': teacli loads safetensors"):
        parse_preset(preset_data(components={"te": component}), "p.yaml")
    component["kwargs"]["use_safetensors"] = True  # saying what is done anyway is fine
    assert parse_preset(preset_data(components={"te": component}), "p.yaml").components["te"].kwargs == {
        "use_safetensors": True
    }


# --- presets are data ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "name: !!python/name:os.system\n",
        "name: !!python/object/new:os.system ['touch {marker}']\n",
        "name: !!python/object/apply:os.system ['touch {marker}']\n",
        "name: !!python/module:{sentinel}\n",
    ],
    ids=["name", "object-new", "object-apply", "module"],
)
def test_python_tags_in_a_preset_are_rejected_without_running(tmp_path, sentinel, text):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(text.format(marker=marker, sentinel=SENTINEL))
    with pytest.raises(PresetError) as refused:
        load_preset_file(path)
    message = str(refused.value)
    assert message.startswith(f"preset {path}: not valid YAML at line 1: could not determine a constructor")
    assert "(presets are plain YAML: tags such as !!python/object are not allowed)" in message
    assert "\n" not in message and not marker.exists()


FORBIDDEN_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
FORBIDDEN_LOADERS = {"Loader", "FullLoader", "UnsafeLoader", "UnsafeConstructor", "FullConstructor"}


def yaml_uses(path: Path) -> tuple[set[str], set[str]]:
    """(yaml.<attr> names used, names imported from yaml) in one source file."""
    attributes, imported = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "yaml":
            attributes.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "yaml":
            imported |= {alias.name for alias in node.names}
    return attributes, imported


def test_yaml_safe_load_is_the_only_yaml_loader_in_the_package():
    files = sorted({*PACKAGE.joinpath("teacli").rglob("*.py"), *PACKAGE.joinpath("extractors").rglob("*.py")})
    assert len(files) > 20
    used = {path: yaml_uses(path) for path in files}
    for path, (attributes, imported) in used.items():
        assert not attributes & (FORBIDDEN_YAML | FORBIDDEN_LOADERS), f"{path}: {attributes}"
        assert not imported & (FORBIDDEN_YAML | FORBIDDEN_LOADERS), f"{path}: from yaml import {imported}"
    # preset_files reads presets with a bounded subclass of yaml.SafeLoader (safe_load's loader, nothing more)
    assert "SafeLoader" in used[PACKAGE / "teacli" / "models" / "preset_files.py"][0]  # the check sees real uses
    from teacli.models import preset_files

    assert preset_files._PresetLoader.__mro__[1] is yaml.SafeLoader


def test_the_yaml_check_catches_an_unsafe_call(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import yaml\nfrom yaml import FullLoader\nyaml.load(text, Loader=yaml.Loader)\n")
    assert yaml_uses(bad) == ({"load", "Loader"}, {"FullLoader"})


@pytest.mark.parametrize("field", ["extractor_module", "extractor_path", "module"])
def test_a_preset_cannot_name_a_module_to_import(field, sentinel):
    with pytest.raises(PresetError, match=rf"field '{field}': unknown field; known fields: "):
        parse_preset(preset_data(**{field: SENTINEL}), "p.yaml")


@pytest.mark.parametrize("field", ["transformer", "extractor", "pipeline"])
@pytest.mark.parametrize("value", ["os.system", "extractors.flux.flux_context", f"{SENTINEL}.flux_context", "a/b"])
def test_code_fields_take_names_never_import_paths(tmp_path, sentinel, field, value):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(preset_data(**{field: value})))
    with pytest.raises(PresetError) as refused:
        resolve_preset(str(path))
    assert str(refused.value).startswith(f"preset {path}: field '{field}': expected ")
    assert str(refused.value).endswith(f"got {value!r}: a name, never a path to code")


def test_a_component_class_is_a_name_too(sentinel):
    component = {"class": f"{SENTINEL}.flux_context", "model": "m"}
    with pytest.raises(PresetError, match=r"field 'components.te.class': expected a transformers or diffusers class"):
        parse_preset(preset_data(components={"te": component}), "p.yaml")


def test_an_unknown_transformer_name_is_looked_up_not_imported(sentinel):
    preset = parse_preset(preset_data(transformer=SENTINEL), "p.yaml")
    with pytest.raises(PresetError, match=f"field 'transformer': TeaCache has no extractor for {SENTINEL}; supported"):
        check_extractor(preset)


def test_the_extractor_field_is_a_label_the_registry_never_imports(sentinel, tiny_flux_dir):
    from teacli import TeaCacheConfig, apply_teacache, remove_teacache

    preset = parse_preset(preset_data(extractor=SENTINEL), "p.yaml")
    check_extractor(preset)
    pipe = load_pipeline(preset, CPU, torch.float32)
    handle = apply_teacache(pipe, TeaCacheConfig(thresh=0.0, coefficients=preset.coefficients))
    try:
        pipe("a red circle", num_inference_steps=2, height=64, width=64, max_sequence_length=32, output_type="latent")
    finally:
        remove_teacache(pipe)
    assert handle.stats.totals.calls == 2  # the flux extractor, found by the transformer class, ran
