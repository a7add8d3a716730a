"""Fidelity of the Sana extractor on tiny SanaTransformer2DModel instances (the real diffusers class)."""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor


def make_model(sprint: bool = False):
    from diffusers import SanaTransformer2DModel

    torch.manual_seed(0)
    return SanaTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=16,
        caption_channels=24,
        mlp_ratio=2.5,
        sample_size=8,
        patch_size=1,
        guidance_embeds=sprint,
        qk_norm="rms_norm_across_heads" if sprint else None,
    ).eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


def inputs(seed: int, timestep: float = 700.0, batch: int = 2, **extra) -> dict:
    """Shaped as SanaPipeline passes them: CFG batched (uncond, cond), Gemma embeddings with their 0/1 mask."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[0, 3:] = 0
    return dict(
        hidden_states=torch.randn(batch, 4, 8, 8, generator=generator),
        encoder_hidden_states=torch.randn(batch, 6, 24, generator=generator),
        encoder_attention_mask=mask,
        timestep=torch.full((batch,), timestep),
        **extra,
    )


def test_caching_off_equals_the_unhooked_forward_over_decreasing_timesteps(model):
    # Sana pipelines batch CFG and the class has no cache_context: one default branch.
    calls = [
        (None, inputs(1, 999.0, return_dict=False)),
        (None, inputs(2, 800.0)),
        (None, inputs(3, 500.0, return_dict=False)),
        (None, inputs(4, 100.0)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_with_self_attention_mask_bias_masks_and_controlnet(model):
    generator = torch.Generator().manual_seed(9)
    bias = torch.zeros(2, 1, 6)
    bias[1, :, 4:] = -10000.0  # an already-converted cross-attention bias (3D) passes through untouched
    calls = [
        (None, inputs(6, 900.0, attention_mask=torch.ones(2, 64, dtype=torch.long))),
        (None, inputs(7, 600.0, controlnet_block_samples=(torch.randn(2, 64, 16, generator=generator),))),
        (None, dict(inputs(8, 300.0, return_dict=False), encoder_attention_mask=bias)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_sana_sprint_with_guidance_embedding():
    sprint = make_model(sprint=True)
    guidance = torch.full((1,), 4.5 * 0.1)  # guidance_scale * guidance_embeds_scale, as SanaSprintPipeline does
    calls = [
        (None, inputs(1, 1.2, batch=1, guidance=guidance)),
        (None, inputs(2, 0.6, batch=1, guidance=guidance, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(sprint, calls)
    assert_cached_call_is_input_plus_residual(sprint, calls[0][1], inputs(3, 0.9, batch=1, guidance=guidance))


def test_cached_call_is_input_plus_residual(model):
    (residual,) = assert_cached_call_is_input_plus_residual(model, inputs(1, 900.0), inputs(2, 850.0))
    assert residual.shape == (2, 64, 16)
    assert_cached_call_is_input_plus_residual(model, inputs(3, 900.0), inputs(4, 850.0, return_dict=False))


@torch.no_grad()
def test_modulated_input_is_what_the_first_block_feeds_its_self_attention(model):
    given = inputs(3, 400.0)
    context = get_extractor("SanaTransformer2DModel")(model, **given)
    assert torch.equal(context.hidden_states, model.patch_embed(given["hidden_states"]))
    assert context.encoder_hidden_states is None
    seen = []
    handle = model.transformer_blocks[0].attn1.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        model(**given)
    finally:
        handle.remove()
    torch.testing.assert_close(context.modulated_input, seen[0], rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(400.0)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(model):
    calls = [
        (None, inputs(1, 900.0, attention_kwargs={"scale": 0.5})),
        (None, inputs(2, 700.0, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)
