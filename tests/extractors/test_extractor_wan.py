"""Fidelity of the Wan extractor on tiny WanTransformer3DModels (the real diffusers class): Wan 2.1 T2V,
I2V with CLIP image embeddings, Wan 2.2 TI2V's per-token timesteps, and ret-steps mode's time projection."""

import pytest
import torch
from support import (
    COEFFICIENTS,
    assert_cached_call_is_input_plus_residual,
    assert_caching_off_matches_unhooked,
)

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache
from teacli.engine.context import ExtractorContractError

EXTRACTOR = "WanTransformer3DModel"
CHANNELS = 4  # latent channels
FRAMES, HEIGHT, WIDTH = 2, 4, 4  # latent grid; 2x2 patches -> 8 tokens
TOKENS = FRAMES * (HEIGHT // 2) * (WIDTH // 2)
TEXT_DIM = 16
TEXT = 6  # T2V prompt tokens
I2V_TEXT = 512  # the I2V attention processor splits off the image tokens assuming 512 text tokens
IMAGE_TOKENS, IMAGE_DIM = 4, 8
INNER = 24  # 2 heads of 12


def make_wan_transformer(**config) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
        **config,
    )
    return model.eval()


@pytest.fixture(scope="module")
def wan_transformer():
    return make_wan_transformer()


@pytest.fixture(scope="module")
def wan_i2v_transformer():
    # I2V checkpoints: a CLIP image embedder and added K/V projections in every cross-attention.
    return make_wan_transformer(image_dim=IMAGE_DIM, added_kv_proj_dim=INNER)


def wan_inputs(seed: int, timestep: float = 700.0, batch: int = 1, per_token: bool = False, **extra) -> dict:
    """Shaped as WanPipeline passes them (timestep (B,), or (B, seq) when expand_timesteps, as TI2V)."""
    generator = torch.Generator().manual_seed(seed)
    if per_token:  # WanImageToVideoPipeline with expand_timesteps: the first latent frame is clean (t = 0)
        timestep = torch.full((batch, TOKENS), timestep)
        timestep[:, : TOKENS // FRAMES] = 0.0
    else:
        timestep = torch.full((batch,), timestep)
    inputs = dict(
        hidden_states=torch.randn(batch, CHANNELS, FRAMES, HEIGHT, WIDTH, generator=generator),
        timestep=timestep,
        encoder_hidden_states=torch.randn(batch, TEXT, TEXT_DIM, generator=generator),
        attention_kwargs=None,
        return_dict=False,
    )
    return {**inputs, **extra}


def i2v_inputs(seed: int, timestep: float = 700.0, **extra) -> dict:
    """WanImageToVideoPipeline's call: 512 text tokens and the CLIP image embeddings."""
    generator = torch.Generator().manual_seed(100 + seed)
    return wan_inputs(
        seed,
        timestep,
        encoder_hidden_states=torch.randn(1, I2V_TEXT, TEXT_DIM, generator=generator),
        encoder_hidden_states_image=torch.randn(1, IMAGE_TOKENS, IMAGE_DIM, generator=generator),
        **extra,
    )


def cfg_calls(make=wan_inputs, **extra):
    """Decreasing timesteps, cond then uncond within each step, as WanPipeline calls them."""
    calls = []
    for step, t in enumerate((999.0, 600.0, 20.0)):
        calls.append(("cond", make(2 * step, t, **extra)))
        calls.append(("uncond", make(2 * step + 1, t, **extra)))
    return calls


@pytest.mark.parametrize("return_dict", [True, False])
def test_caching_off_equals_the_unhooked_forward_in_both_cfg_branches(wan_transformer, return_dict):
    calls = cfg_calls(return_dict=return_dict)
    calls.append((None, wan_inputs(9, 500.0, batch=2, return_dict=return_dict)))
    assert_caching_off_matches_unhooked(wan_transformer, calls)


def test_caching_off_for_i2v_with_image_embeddings(wan_i2v_transformer):
    calls = cfg_calls(i2v_inputs)[:4]
    calls[1][1]["return_dict"] = True
    assert_caching_off_matches_unhooked(wan_i2v_transformer, calls)


def test_caching_off_for_ti2v_per_token_timesteps(wan_transformer):
    calls = cfg_calls(per_token=True)[:4]
    calls.append((None, wan_inputs(9, 300.0, batch=2, per_token=True, return_dict=True)))
    assert_caching_off_matches_unhooked(wan_transformer, calls)


def test_caching_off_measured_on_the_time_projection(wan_transformer):
    """ret-steps mode: the preset names `time_projection`; caching off still changes nothing."""
    calls = cfg_calls()
    expected = [wan_transformer(**kwargs)[0] for _, kwargs in calls]
    config = TeaCacheConfig(thresh=0.0, coefficients=COEFFICIENTS, modulated_input="time_projection", ret_steps=5)
    handle = apply_teacache(wan_transformer, config)
    try:
        with torch.no_grad():
            for (branch, kwargs), wanted in zip(calls, expected):
                with wan_transformer.cache_context(branch):
                    torch.testing.assert_close(wan_transformer(**kwargs)[0], wanted, rtol=1e-6, atol=1e-6)
            # the state remembers the time projection, not the time embedding
            with wan_transformer.cache_context("uncond"):
                remembered = handle.hooks[0].state_manager.get_state().previous_modulated_input
        context = get_extractor(EXTRACTOR)(wan_transformer, **calls[-1][1])
        assert torch.equal(remembered, context.modulated_alternatives["time_projection"])
        assert remembered.shape == (1, 6, INNER)
    finally:
        remove_teacache(wan_transformer)


def test_an_unknown_modulated_input_is_refused(wan_transformer):
    apply_teacache(wan_transformer, TeaCacheConfig(thresh=0.0, coefficients=COEFFICIENTS, modulated_input="norm1"))
    try:
        with pytest.raises(ExtractorContractError, match="time_projection"), torch.no_grad():
            wan_transformer(**wan_inputs(1))
    finally:
        remove_teacache(wan_transformer)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(wan_transformer):
    calls = cfg_calls(attention_kwargs={"scale": 0.5})[:4]
    assert_caching_off_matches_unhooked(wan_transformer, calls)
    assert calls[0][1]["attention_kwargs"] == {"scale": 0.5}  # the caller's dict is left as it was


def test_cached_call_is_input_plus_residual(wan_transformer, wan_i2v_transformer):
    (residual,) = assert_cached_call_is_input_plus_residual(wan_transformer, wan_inputs(1, 900.0), wan_inputs(2, 850.0))
    assert residual.shape == (1, TOKENS, INNER)
    assert_cached_call_is_input_plus_residual(
        wan_transformer, wan_inputs(1, 900.0, per_token=True), wan_inputs(2, 850.0, per_token=True), "cond"
    )
    assert_cached_call_is_input_plus_residual(wan_i2v_transformer, i2v_inputs(1, 900.0), i2v_inputs(2, 850.0), "uncond")


@torch.no_grad()
@pytest.mark.parametrize("per_token", [False, True])
def test_modulated_inputs_are_the_time_embedding_and_its_projection(wan_transformer, per_token):
    inputs = wan_inputs(3, 400.0, batch=2, per_token=per_token)
    context = get_extractor(EXTRACTOR)(wan_transformer, **inputs)
    embedder = wan_transformer.condition_embedder
    # TeaCache4Wan2.1: e = time_embedding(sinusoid(t)), e0 = time_projection(e) = Linear(SiLU(e)), 6 vectors
    temb = embedder.time_embedder(embedder.timesteps_proj(inputs["timestep"].flatten()))
    projection = embedder.time_proj(torch.nn.functional.silu(temb))
    if per_token:
        temb, projection = temb.unflatten(0, (2, TOKENS)), projection.unflatten(0, (2, TOKENS)).unflatten(2, (6, -1))
    else:
        projection = projection.unflatten(1, (6, -1))
    assert torch.equal(context.modulated_input, temb)
    assert torch.equal(context.temb, temb)
    assert torch.equal(context.modulated_alternatives["time_projection"], projection)
    patches = wan_transformer.patch_embedding(inputs["hidden_states"]).flatten(2).transpose(1, 2)
    assert torch.equal(context.hidden_states, patches)
    assert context.timestep == pytest.approx(400.0)  # the noisy tokens' timestep, not the clean frame's 0


def test_gradient_checkpointing_branch_matches_the_forward():
    model = make_wan_transformer()
    model.enable_gradient_checkpointing()
    inputs = wan_inputs(8, 300.0, return_dict=True)
    with torch.enable_grad():
        expected = model(**inputs).sample
        context = get_extractor(EXTRACTOR)(model, **inputs)
        output = context.postprocess(*context.run_transformer_blocks()).sample
    torch.testing.assert_close(output, expected, rtol=1e-6, atol=1e-6)
