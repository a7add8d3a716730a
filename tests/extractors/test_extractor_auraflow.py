"""Fidelity of the AuraFlow extractor on a tiny AuraFlowTransformer2DModel (the real diffusers class)."""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache


def make_model(num_mmdit_layers: int = 2):
    from diffusers import AuraFlowTransformer2DModel

    torch.manual_seed(0)
    return AuraFlowTransformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=num_mmdit_layers,
        num_single_dit_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        caption_projection_dim=32,  # must equal heads * head_dim
        out_channels=4,
        pos_embed_max_size=64,  # an 8x8 grid of positions: non-square latents take a centred crop
    ).eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


def inputs(seed: int, timestep: float = 0.7, batch: int = 1, height: int = 8, width: int = 8, **extra) -> dict:
    """Shaped as AuraFlowPipeline passes them: latents NCHW, UMT5 states, t / 1000; CFG is one batch of two."""
    generator = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, 4, height, width, generator=generator),
        encoder_hidden_states=torch.randn(batch, 6, 24, generator=generator),
        timestep=torch.full((batch,), timestep),
        **extra,
    )


def test_caching_off_equals_the_unhooked_forward_across_steps(model):
    # The class has no cache_context (no CacheMixin) and the pipeline batches CFG, so one default branch.
    calls = [
        (None, inputs(1, 0.95, batch=2, return_dict=False)),
        (None, inputs(2, 0.6, batch=2)),
        (None, inputs(3, 0.3, height=8, width=12, return_dict=False)),  # non-square
        (None, inputs(4, 0.1, height=12, width=8)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


@torch.no_grad()
def test_caching_off_with_latents_passed_positionally_as_the_pipeline_does(model):
    given = inputs(5, 0.8, batch=2, return_dict=False)
    latents = given.pop("hidden_states")
    reference = model(latents, **given)[0]
    apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=[1.0, 0.0]))
    try:
        torch.testing.assert_close(model(latents, **given)[0], reference, rtol=1e-6, atol=1e-6)
    finally:
        remove_teacache(model)


def test_caching_off_without_joint_blocks():
    calls = [(None, inputs(6, 0.9)), (None, inputs(7, 0.5, return_dict=False))]
    assert_caching_off_matches_unhooked(make_model(num_mmdit_layers=0), calls)


def test_cached_call_is_input_plus_residual(model):
    (residual,) = assert_cached_call_is_input_plus_residual(model, inputs(1, 0.9), inputs(2, 0.8))
    assert residual.shape == (1, 16, 32)  # image tokens only: the text stream is not cached
    (residual,) = assert_cached_call_is_input_plus_residual(
        model, inputs(3, 0.9, batch=2, width=12), inputs(4, 0.8, batch=2, width=12)
    )
    assert residual.shape == (2, 24, 32)


@torch.no_grad()
def test_modulated_input_is_the_first_joint_block_norm1_image_output(model):
    given = inputs(3, 0.4)
    context = get_extractor("AuraFlowTransformer2DModel")(model, **given)
    image = model.pos_embed(given["hidden_states"])
    assert torch.equal(context.hidden_states, image)
    assert context.encoder_hidden_states is None
    temb = model.time_step_proj(model.time_step_embed(given["timestep"]))
    torch.testing.assert_close(context.temb, temb, rtol=0, atol=1e-6)
    norm1 = model.joint_transformer_blocks[0].norm1
    shift, scale = norm1.linear(norm1.silu(temb)).chunk(6, dim=1)[:2]
    norm = torch.nn.functional.layer_norm(image, (32,), eps=1e-5)  # FP32LayerNorm's default eps
    expected = norm * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(context.modulated_input, expected, rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(0.4)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(model):
    calls = [
        (None, inputs(1, 0.9, attention_kwargs={"scale": 0.5})),
        (None, inputs(2, 0.7, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)
