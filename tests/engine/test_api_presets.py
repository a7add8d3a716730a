"""teacli.apply_teacache without coefficients: the preset of the pipeline's model (by hub id, folder or embedded
model, else by transformer class) gives what the config leaves out, exactly as the command line builds it
(generation.caching.teacache_configs); what the config gives wins; the source is logged and kept in stats."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import pytest
import torch
from support import make_flux_transformer
from toy import BareToyTransformer

import teacli
from teacli import TeaCacheConfig, TeaCacheError, UnknownTransformerError, apply_teacache
from teacli.generation.caching import teacache_configs
from teacli.models.catalog import builtin_presets
from teacli.models.loading import load_pipeline

FAMILIES = ["tiny-flux", "tiny-qwen-image", "tiny-sd3", "tiny-wan22"]
OWN = [1.0, 0.0]


@pytest.fixture(scope="module")
def pipes(teacli_cache):
    """Each tiny pipeline loaded once for the module (the loading is what costs)."""
    loaded = {}

    def get(name: str):
        if name not in loaded:
            loaded[name] = load_pipeline(builtin_presets()[name], torch.device("cpu"), torch.float32)
        return loaded[name]

    yield get
    for pipe in loaded.values():
        teacli.remove_teacache(pipe)


def preset_configs(name: str, names) -> dict[str, TeaCacheConfig]:
    made = teacache_configs(builtin_presets()[name])
    return dict(made) if isinstance(made, dict) else dict.fromkeys(names, made)


@pytest.fixture
def caplog(caplog, monkeypatch):
    """caplog listens at the root: a CLI test earlier in the session stops teacli's logger from propagating."""
    monkeypatch.setattr(logging.getLogger("teacli"), "propagate", True)
    return caplog


@pytest.mark.parametrize("name", FAMILIES)
def test_no_config_takes_every_setting_from_the_models_preset(pipes, caplog, name):
    pipe = pipes(name)
    with caplog.at_level(logging.INFO, logger="teacli"), apply_teacache(pipe) as handle:
        assert handle.configs == preset_configs(name, handle.modules)
        assert handle.stats.preset == name
        assert handle.stats.coefficients_source.startswith(f"preset {name} (by embedded model {name}): ")
        assert builtin_presets()[name].coefficients_source in handle.stats.coefficients_source
    transformer = type(pipe.transformer).__name__
    assert f"TeaCache on {transformer}: coefficients from preset {name} (by embedded model {name})" in caplog.text


def test_two_experts_each_get_their_own_coefficients_and_settings(pipes):
    with apply_teacache(pipes("tiny-wan22")) as handle:
        first, second = handle.configs["transformer"], handle.configs["transformer_2"]
    expert = builtin_presets()["tiny-wan22"].experts["transformer_2"]
    assert second.coefficients == list(expert.coefficients) != first.coefficients
    assert (first.modulated_input, second.modulated_input) == (None, "time_projection")


@pytest.mark.parametrize("name", FAMILIES)
def test_what_the_config_gives_wins_and_the_rest_is_the_presets(pipes, name):
    given = TeaCacheConfig(thresh=0.3, ret_steps=2, max_cached_in_row=3, start=0.1)
    with apply_teacache(pipes(name), given) as handle:
        expected = {
            module: replace(config, thresh=0.3, ret_steps=2, max_cached_in_row=3, start=0.1)
            for module, config in preset_configs(name, handle.modules).items()
        }
        assert handle.configs == expected
        assert all(config.coefficients for config in handle.configs.values())


def test_a_config_with_coefficients_is_applied_as_given(pipes):
    given = TeaCacheConfig(coefficients=OWN)
    with apply_teacache(pipes("tiny-flux"), given) as handle:
        assert handle.config is given and handle.config.thresh == 0.2
        assert (handle.stats.preset, handle.stats.coefficients_source) == (None, None)


def test_per_denoiser_configs_are_filled_each_from_its_own_expert(pipes):
    given = {"transformer": TeaCacheConfig(thresh=0.05), "transformer_2": TeaCacheConfig(coefficients=OWN)}
    with apply_teacache(pipes("tiny-wan22"), given) as handle:
        assert handle.configs["transformer"] == replace(preset_configs("tiny-wan22", ())["transformer"], thresh=0.05)
        assert handle.configs["transformer_2"] is given["transformer_2"]
    with pytest.raises(TeaCacheError, match="per-denoiser configs must match"):
        apply_teacache(pipes("tiny-wan22"), {"transformer": TeaCacheConfig()})


def test_a_pipeline_is_found_by_the_hub_id_it_was_loaded_from(teacli_cache):
    pipe = load_pipeline(builtin_presets()["tiny-flux"], torch.device("cpu"), torch.float32)
    pipe.register_to_config(_name_or_path="black-forest-labs/FLUX.1-schnell")
    with apply_teacache(pipe, TeaCacheConfig(end=0.9)) as handle:
        assert handle.config == replace(teacache_configs(builtin_presets()["flux-schnell"]), end=0.9)
        assert handle.stats.preset == "flux-schnell"
        assert handle.stats.coefficients_source.startswith(
            "preset flux-schnell (by hub id black-forest-labs/FLUX.1-schnell): "
        )


@pytest.mark.parametrize(
    ("loaded_from", "preset", "found_by"),
    [
        ("black-forest-labs/FLUX.1-dev", "flux-dev", "hub id black-forest-labs/FLUX.1-dev"),
        (
            "/cache/hub/models--black-forest-labs--FLUX.1-schnell/snapshots/0123abc",
            "flux-schnell",
            "hub id black-forest-labs/FLUX.1-schnell (its cached copy /cache/hub/",
        ),
        ("/models/FLUX.1-Kontext-dev/transformer", "flux-kontext-dev", "local folder /models/FLUX.1-Kontext-dev/"),
    ],
    ids=["hub-id", "hub-cache", "folder-name"],
)
def test_a_bare_transformer_is_found_by_where_it_was_loaded_from(loaded_from, preset, found_by):
    transformer = make_flux_transformer()
    transformer.register_to_config(_name_or_path=loaded_from)
    with apply_teacache(transformer, TeaCacheConfig(num_inference_steps=4)) as handle:
        expected = replace(teacache_configs(builtin_presets()[preset]), num_inference_steps=4)
        assert handle.config == expected and handle.stats.preset == preset
        assert handle.stats.coefficients_source.startswith(f"preset {preset} (by {found_by}")


def test_a_hub_id_of_another_transformer_class_falls_back_to_the_class():
    transformer = make_flux_transformer()
    transformer.register_to_config(_name_or_path="Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    with apply_teacache(transformer) as handle:
        assert handle.stats.preset == "flux-dev"
        assert "(by transformer class FluxTransformer2DModel, the first of" in handle.stats.coefficients_source


def test_a_transformer_from_nowhere_takes_the_first_real_preset_of_its_class_and_says_which(caplog):
    with caplog.at_level(logging.INFO, logger="teacli"), apply_teacache(make_flux_transformer()) as handle:
        assert handle.config == teacache_configs(builtin_presets()["flux-dev"])
    count = sum(p.transformer == "FluxTransformer2DModel" for p in builtin_presets().values())
    said = (
        "TeaCache on FluxTransformer2DModel: coefficients from preset flux-dev (by transformer class "
        f"FluxTransformer2DModel, the first of its {count} presets; pass coefficients to choose)"
    )
    assert said in caplog.text


def test_a_class_without_a_preset_is_refused_naming_what_to_pass():
    model = BareToyTransformer()
    with pytest.raises(TeaCacheError) as raised:
        apply_teacache(model, TeaCacheConfig(thresh=0.3))
    assert str(raised.value).startswith(
        "no preset for BareToyTransformer to take coefficients from; pass them as TeaCacheConfig's coefficients="
    )
    with apply_teacache(model, TeaCacheConfig(coefficients=OWN, num_inference_steps=4)) as handle:
        assert handle.active  # nothing was left hooked by the refusal


def test_a_class_without_an_extractor_is_refused_as_unsupported():
    class NoSuchTransformer2DModel(torch.nn.Module):
        pass

    with pytest.raises(UnknownTransformerError, match="TeaCache has no extractor for NoSuchTransformer2DModel"):
        apply_teacache(NoSuchTransformer2DModel())


def test_the_engines_own_apply_refuses_a_config_without_coefficients():
    from teacli.engine.apply import apply_teacache as apply_as_given

    with pytest.raises(TeaCacheError, match=re.escape("coefficients are required: leave them out (None)")):
        apply_as_given(make_flux_transformer(), TeaCacheConfig(thresh=0.3))


def test_the_public_name_is_the_resolving_apply():
    from teacli.generation.auto import apply_teacache as resolving

    assert teacli.apply_teacache is resolving


# --- the docstring examples run as written, on a tiny FLUX pipeline standing in for FLUX.1-dev -------------------


def example(obj) -> str:
    match = re.search(r"Example:\n\s*```python\n(.*?)```", obj.__doc__, re.S)
    assert match, f"{obj.__name__} has no Example: block"
    lines = match.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


@pytest.mark.parametrize("documented", [apply_teacache, TeaCacheConfig], ids=["apply_teacache", "TeaCacheConfig"])
def test_the_docstring_example_runs(teacli_cache, monkeypatch, capsys, documented):
    from diffusers import FluxPipeline

    pipe = load_pipeline(builtin_presets()["tiny-flux"], torch.device("cpu"), torch.float32)
    pipe.register_to_config(_name_or_path="black-forest-labs/FLUX.1-dev")
    monkeypatch.setattr(FluxPipeline, "from_pretrained", classmethod(lambda cls, *args, **kwargs: pipe))
    monkeypatch.setattr(FluxPipeline, "to", lambda self, *args, **kwargs: self)  # no GPU here
    call = FluxPipeline.__call__
    small = dict(height=32, width=32, num_inference_steps=4, max_sequence_length=16)
    monkeypatch.setattr(FluxPipeline, "__call__", lambda self, *args, **kwargs: call(self, *args, **kwargs | small))
    exec(compile(example(documented), f"<{documented.__name__} example>", "exec"), {})
    printed = capsys.readouterr().out
    assert "preset flux-dev (by hub id black-forest-labs/FLUX.1-dev)" in printed
    apply_teacache(pipe, TeaCacheConfig(coefficients=OWN)).remove()  # the example took its hook off again
