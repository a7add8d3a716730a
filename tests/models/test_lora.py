"""LoRA through diffusers' loaders (teacli.models.lora.load_lora) on tiny-flux; TeaCache staying correct with one."""

import shutil
import sys

import pytest
import torch
from support import (
    assert_cached_call_is_input_plus_residual,
    assert_caching_off_matches_unhooked,
    flux_inputs,
    lora_state_dict,
    save_lora,
)

from teacli import TeaCacheConfig, apply_teacache, remove_teacache
from teacli.models.catalog import builtin_presets
from teacli.models.loading import ModelError, load_pipeline
from teacli.models.lora import load_lora

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def loras(teacli_cache, tmp_path_factory):
    """safetensors and pickle copies of one LoRA, one with shapes for another model, and files that are no LoRA."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("loras")
    state = lora_state_dict()
    # Shapes of other models of the family: one with narrower outputs, one wider everywhere (a full-size FLUX
    # LoRA on tiny-flux). diffusers' FLUX loader pads narrower inputs, so those would load: not used here.
    narrower = {k: v[:-1].contiguous() if ".lora_B." in k else v for k, v in state.items()}
    wider = {k: torch.nn.functional.pad(v, (0, 8) if ".lora_A." in k else (0, 0, 0, 8)) for k, v in state.items()}
    not_lora = root / "not-lora.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, not_lora)
    elsewhere = root / "other-model.safetensors"
    save_file(
        {
            "transformer.unet_mid.lora_A.weight": torch.zeros(4, 8),
            "transformer.unet_mid.lora_B.weight": torch.zeros(8, 4),
        },
        elsewhere,
    )
    sd_style = root / "unet-lora.safetensors"  # diffusers' format, for a UNet: no key for FLUX's transformer
    save_file({"unet.mid.lora_A.weight": torch.zeros(4, 8), "unet.mid.lora_B.weight": torch.zeros(8, 4)}, sd_style)
    return {
        "safe": save_lora(root / "safe", state),
        "unet": sd_style,
        "pickle": save_lora(root / "pickle", state, safe=False),
        "narrower": save_lora(root / "narrower", narrower),
        "wider": save_lora(root / "wider", wider),
        "not-lora": not_lora,
        "other-model": elsewhere,
    }


@pytest.fixture
def pipe(teacli_cache):
    """A fresh tiny-flux per test: a LoRA changes the pipeline it is loaded into."""
    return load_pipeline(builtin_presets()["tiny-flux"], torch.device("cpu"), torch.float32)


def latents(pipe, steps: int = 4) -> torch.Tensor:
    return pipe(
        "a red circle on a blue background",
        num_inference_steps=steps,
        height=64,
        width=64,
        guidance_scale=3.5,
        max_sequence_length=32,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
    ).images


def adapters(pipe) -> set[str]:
    return {name for names in pipe.get_list_adapters().values() for name in names}


def test_lora_changes_the_output_and_scale_zero_is_no_lora(pipe, loras, teacli_cache):
    base = latents(pipe)
    assert load_lora(pipe, str(loras["safe"])) == "teacli_lora_0"
    assert adapters(pipe) == {"teacli_lora_0"}
    with_lora = latents(pipe)
    assert (with_lora - base).abs().max() > 1e-2

    other = load_pipeline(builtin_presets()["tiny-flux"], torch.device("cpu"), torch.float32)
    load_lora(other, str(loras["safe"].parent), scale=0.0)  # a folder works as well as the file
    assert torch.equal(latents(other), base)


def test_thresh_zero_with_lora_equals_the_unhooked_lora_pipeline(pipe, loras):
    load_lora(pipe, str(loras["safe"]), scale=0.8)
    unhooked = latents(pipe)
    handle = apply_teacache(pipe, TeaCacheConfig(thresh=0.0, coefficients=builtin_presets()["tiny-flux"].coefficients))
    try:
        hooked = latents(pipe)
    finally:
        remove_teacache(pipe)
    assert handle.stats.totals.cached == 0 and handle.stats.totals.calls == 4
    assert torch.equal(hooked, unhooked)


def test_fidelity_proofs_hold_on_the_lora_transformer(pipe, loras):
    load_lora(pipe, str(loras["safe"]))
    transformer = pipe.transformer
    assert any("lora_A" in name for name, _ in transformer.named_parameters())
    half = {**flux_inputs(1), "joint_attention_kwargs": {"scale": 0.5}}
    with torch.no_grad():  # the per-call scale reaches the LoRA layers, so the proofs below cover it
        assert not torch.allclose(transformer(**half).sample, transformer(**flux_inputs(1)).sample)
    assert_caching_off_matches_unhooked(transformer, [(None, flux_inputs(1)), (None, half), ("uncond", flux_inputs(2))])
    assert_cached_call_is_input_plus_residual(transformer, flux_inputs(1), flux_inputs(2, timestep=0.6))


@pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")  # peft's note on a second adapter
def test_two_loras_stay_active_at_their_own_scales(pipe, loras):
    load_lora(pipe, str(loras["safe"]), scale=1.0)
    once = latents(pipe, steps=2)
    again = load_pipeline(builtin_presets()["tiny-flux"], torch.device("cpu"), torch.float32)
    assert [load_lora(again, str(loras["safe"]), scale=0.5) for _ in range(2)] == ["teacli_lora_0", "teacli_lora_1"]
    # W + 0.5 BA + 0.5 BA == W + BA: the first LoRA's scale survived loading the second
    torch.testing.assert_close(latents(again, steps=2), once, rtol=1e-4, atol=1e-5)
    again.unload_lora_weights()  # scales of adapters removed behind load_lora's back are forgotten
    assert load_lora(again, str(loras["safe"])) == "teacli_lora_0"
    assert torch.equal(latents(again, steps=2), once)


def test_pickle_lora_needs_allow_pickle_and_then_loads_the_same_weights(pipe, loras):
    with pytest.raises(ModelError) as refused:
        load_lora(pipe, str(loras["pickle"]))
    assert str(refused.value) == (
        f"LoRA {loras['pickle']} has no safetensors weights (only pickle files, which can run code when loaded); "
        "pass allow_pickle only if you trust it"
    )
    # The CLI words the field as its flag (teacli.errors).
    assert refused.value.worded({"allow_pickle": "--allow-pickle"}) == (
        f"LoRA {loras['pickle']} has no safetensors weights (only pickle files, which can run code when loaded); "
        "pass --allow-pickle only if you trust it"
    )
    with pytest.raises(ModelError, match="no safetensors weights"):
        load_lora(pipe, str(loras["pickle"].parent))  # a folder with only pickle files too
    assert adapters(pipe) == set()
    load_lora(pipe, str(loras["pickle"]), allow_pickle=True)
    from_pickle = latents(pipe, steps=2)
    other = load_pipeline(builtin_presets()["tiny-flux"], torch.device("cpu"), torch.float32)
    load_lora(other, str(loras["safe"]))
    assert torch.equal(from_pickle, latents(other, steps=2))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("not-lora", "is not a LoRA: none of its weights has a LoRA name"),
        ("other-model", "is not a LoRA for FluxPipeline (FluxTransformer2DModel): "),
        ("unet", "is not a LoRA for FluxPipeline (FluxTransformer2DModel): none of its weights matched the pipeline's"),
        ("narrower", "is not a LoRA for FluxPipeline (FluxTransformer2DModel): size mismatch for "),
        ("wider", "is not a LoRA for FluxPipeline (FluxTransformer2DModel): size mismatch for "),
    ],
)
def test_a_file_that_is_no_lora_for_this_pipeline_is_refused_and_leaves_it_unchanged(pipe, loras, kind, message):
    base = latents(pipe, steps=2)
    with pytest.raises(ModelError) as refused:
        load_lora(pipe, str(loras[kind]))
    text = str(refused.value)
    assert text.startswith(str(loras[kind])) and message in text and "\n" not in text
    assert adapters(pipe) == set()
    assert torch.equal(latents(pipe, steps=2), base)


def test_missing_path_and_hub_ids_offline(pipe, loras, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as missing:
        load_lora(pipe, "nowhere/style.safetensors")
    assert str(missing.value) == (
        f"LoRA nowhere/style.safetensors does not exist (relative to {tmp_path}); "
        "pass a .safetensors file, its folder or a hub id"
    )
    with pytest.raises(ModelError, match=f"LoRA {tmp_path / 'x'} does not exist; "):
        load_lora(pipe, str(tmp_path / "x"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError) as offline:
        load_lora(pipe, "someone/some-flux-lora", offline=True)
    assert str(offline.value) == (
        "LoRA someone/some-flux-lora is not in the local Hugging Face cache; run once without --offline to download it"
    )
    repo = tmp_path / "hub" / "models--someone--some-flux-lora"  # as a download leaves it
    shutil.copytree(loras["safe"].parent, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    assert load_lora(pipe, "someone/some-flux-lora", offline=True) == "teacli_lora_0"


def test_pipeline_without_lora_support_peft_missing_and_bad_scale(pipe, loras, monkeypatch):
    class NoLoraPipeline:
        pass

    with pytest.raises(ModelError, match=r"^NoLoraPipeline has no LoRA support in diffusers .*; drop lora$") as refused:
        load_lora(NoLoraPipeline(), str(loras["safe"]))
    assert refused.value.worded({"lora": "--lora"}).endswith("; drop --lora")
    with pytest.raises(ModelError, match="^lora_scale must be a finite number, got nan$") as refused:
        load_lora(pipe, str(loras["safe"]), scale=float("nan"))
    assert refused.value.worded({"lora_scale": "--lora-scale"}) == "--lora-scale must be a finite number, got nan"
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now fails, as when it is not installed
    with pytest.raises(ModelError) as no_peft:
        load_lora(pipe, str(loras["safe"]))
    assert str(no_peft.value) == "lora needs the peft package: pip install 'teacli[lora]'"
    assert no_peft.value.worded({"lora": "--lora"}) == "--lora needs the peft package: pip install 'teacli[lora]'"
