"""Fidelity of the SD3 extractor on a tiny SD3Transformer2DModel (the real diffusers class).

Three variants as the checkpoints configure them: SD3 Medium (plain joint blocks), SD3.5 Large (QK RMSNorm)
and SD3.5 Medium (QK RMSNorm, dual attention in the first blocks). Inputs are shaped as
StableDiffusion3Pipeline passes them: 16-channel latents, CFG batched as [uncond, cond], timesteps in [0, 1000].
"""

import inspect

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache

CHANNELS, SIDE, TEXT_TOKENS, TEXT_DIM, POOLED_DIM, INNER = 16, 8, 12, 32, 32, 32
VARIANTS = {
    "sd3-medium": dict(dual_attention_layers=(), qk_norm=None),
    "sd3.5-large": dict(dual_attention_layers=(), qk_norm="rms_norm"),
    "sd3.5-medium": dict(dual_attention_layers=(0,), qk_norm="rms_norm"),
}


def make_sd3(variant: str = "sd3-medium", num_layers: int = 2):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(
        sample_size=SIDE,
        patch_size=2,
        in_channels=CHANNELS,
        num_layers=num_layers,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=TEXT_DIM,
        caption_projection_dim=INNER,
        pooled_projection_dim=POOLED_DIM,
        out_channels=CHANNELS,
        pos_embed_max_size=SIDE,
        **VARIANTS[variant],
    ).eval()


@pytest.fixture(scope="module", params=list(VARIANTS))
def model(request):
    return make_sd3(request.param)


def inputs(seed: int, timestep: float = 700.0, batch: int = 2, **extra) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, CHANNELS, SIDE, SIDE, generator=generator),
        encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=generator),
        pooled_projections=torch.randn(batch, POOLED_DIM, generator=generator),
        timestep=torch.full((batch,), timestep),
        **extra,
    )


def test_signature_mirrors_the_forward():
    from diffusers import SD3Transformer2DModel

    forward = list(inspect.signature(SD3Transformer2DModel.forward).parameters)[1:]
    extractor = list(inspect.signature(get_extractor("SD3Transformer2DModel")).parameters)[1:]
    assert extractor == forward
    assert get_extractor("SD3Transformer2DModel").lora_kwargs == "joint_attention_kwargs"


def test_caching_off_equals_the_unhooked_forward(model):
    # SD3Transformer2DModel has no CacheMixin (no cache_context) and StableDiffusion3Pipeline batches
    # [uncond, cond] into one call, so every call lands in the hook's "default" branch.
    assert not hasattr(model, "cache_context")
    calls = [
        (None, inputs(1, 1000.0)),
        (None, inputs(2, 750.0, return_dict=False)),
        (None, inputs(3, 500.0, return_dict=True)),
        (None, inputs(4, 250.0, batch=1, return_dict=False)),  # a batch-1 call (no CFG, as for turbo)
    ]
    assert_caching_off_matches_unhooked(model, calls)


@pytest.mark.parametrize("variant", ["sd3-medium", "sd3.5-medium"])
def test_caching_off_with_controlnet_residuals_and_skip_layers(variant):
    model = make_sd3(variant, num_layers=4)  # residual i feeds blocks 2i, 2i+1; none after the last block
    generator = torch.Generator().manual_seed(9)
    residuals = [torch.randn(1, (SIDE // 2) ** 2, INNER, generator=generator) for _ in range(2)]
    calls = [
        (None, inputs(1, 900.0, batch=1, block_controlnet_hidden_states=residuals)),
        # skip-layer guidance: a batch-1 call on the cond half with some blocks skipped (block 0 included)
        (None, inputs(2, 800.0, batch=1, skip_layers=[0, 1])),
        (None, inputs(3, 700.0, batch=1, block_controlnet_hidden_states=residuals, skip_layers=[1])),
        (None, inputs(4, 600.0, batch=1, skip_layers=[3], return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def _attach_ip_adapter(model, embed_dim: int = 24) -> None:
    """What SD3Transformer2DLoadersMixin._load_ip_adapter_weights builds, at a tiny size."""
    from diffusers.models.attention_processor import SD3IPAdapterJointAttnProcessor2_0
    from diffusers.models.embeddings import IPAdapterTimeImageProjection

    torch.manual_seed(1)
    hidden_dim = 16
    model.image_proj = IPAdapterTimeImageProjection(
        embed_dim=embed_dim,
        output_dim=INNER,
        hidden_dim=hidden_dim,
        depth=1,
        dim_head=8,
        heads=2,
        num_queries=4,
        timestep_in_dim=32,
    ).eval()
    processors = {
        name: SD3IPAdapterJointAttnProcessor2_0(
            hidden_size=INNER, ip_hidden_states_dim=INNER, head_dim=8, timesteps_emb_dim=hidden_dim, scale=0.5
        )
        for name in model.attn_processors
    }
    model.set_attn_processor(processors)


def test_caching_off_with_an_ip_adapter():
    model = make_sd3("sd3.5-large")
    _attach_ip_adapter(model)
    embeds = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(3))
    calls = [
        (None, inputs(1, 900.0, joint_attention_kwargs={"ip_adapter_image_embeds": embeds})),
        (None, inputs(2, 600.0, joint_attention_kwargs={"ip_adapter_image_embeds": embeds}, return_dict=False)),
    ]
    with torch.no_grad():
        without = model(**inputs(1, 900.0)).sample
        with_adapter = model(**calls[0][1]).sample
    assert not torch.allclose(without, with_adapter), "the tiny IP-Adapter must change the output"
    assert_caching_off_matches_unhooked(model, calls)
    # Neither the forward nor the extractor may pop the embeddings from the caller's dict.
    assert all("ip_adapter_image_embeds" in kwargs["joint_attention_kwargs"] for _, kwargs in calls)


def test_caching_off_with_gradient_checkpointing_and_grad_enabled():
    model = make_sd3("sd3.5-medium")
    model.enable_gradient_checkpointing()
    call = inputs(1, 800.0)
    expected = model(**call).sample
    apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=[1.0, 0.0]))
    try:
        got = model(**call).sample
    finally:
        remove_teacache(model)
    assert got.requires_grad
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_cached_call_returns_postprocess_of_input_plus_cached_residual(model):
    (residual,) = assert_cached_call_is_input_plus_residual(model, inputs(1, 900.0), inputs(2, 800.0))
    assert residual.shape == (2, (SIDE // 2) ** 2, INNER)
    assert_cached_call_is_input_plus_residual(
        model, inputs(1, 900.0, batch=1, return_dict=False), inputs(2, 800.0, batch=1, return_dict=False)
    )


@torch.no_grad()
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_modulated_input_is_the_first_block_norm1_output(variant):
    model = make_sd3(variant)
    call = inputs(3, 640.0)
    context = get_extractor("SD3Transformer2DModel")(model, **call)
    image = model.pos_embed(call["hidden_states"])
    temb = model.time_text_embed(call["timestep"], call["pooled_projections"])
    assert torch.equal(context.hidden_states, image)
    assert torch.equal(context.temb, temb)
    norm1 = model.transformer_blocks[0].norm1
    chunks = 9 if variant == "sd3.5-medium" else 6  # SD35AdaLayerNormZeroX vs AdaLayerNormZero
    shift, scale = norm1.linear(norm1.silu(temb)).chunk(chunks, dim=1)[:2]
    expected = torch.nn.functional.layer_norm(image, (INNER,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(context.modulated_input, expected, rtol=1e-5, atol=1e-5)
    assert context.encoder_hidden_states is None  # the last block is context_pre_only
    assert context.timestep == pytest.approx(640.0)


def test_lora_scale_in_joint_attention_kwargs_is_accepted_with_caching_off(model):
    calls = [
        (None, inputs(1, 900.0, joint_attention_kwargs={"scale": 0.5})),
        (None, inputs(2, 700.0, joint_attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)
    assert calls[0][1]["joint_attention_kwargs"] == {"scale": 0.5}  # the caller's dict is left alone
