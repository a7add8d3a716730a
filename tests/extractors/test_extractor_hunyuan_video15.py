"""Fidelity of the HunyuanVideo 1.5 extractor on tiny HunyuanVideo15Transformer3DModel instances (the real class)."""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor

EXTRACTOR = "HunyuanVideo15Transformer3DModel"


def make_model(use_meanflow: bool = False):
    from diffusers import HunyuanVideo15Transformer3DModel

    torch.manual_seed(0)
    return HunyuanVideo15Transformer3DModel(
        in_channels=9,  # latents + condition latents + mask, as 32 + 32 + 1 in the real model
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=2,  # 1 in the released checkpoints; 2 exercises the unpatchify
        patch_size_t=1,
        text_embed_dim=16,
        text_embed_2_dim=12,
        image_embed_dim=16,
        rope_axes_dim=(4, 6, 6),
        use_meanflow=use_meanflow,
    ).eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


def inputs(seed: int, timestep: float = 700.0, batch: int = 1, image: bool = False, **extra) -> dict:
    """Shaped as HunyuanVideo15Pipeline passes them: 5D latents with the condition channels, Qwen2.5-VL
    embeddings + mask, byT5 glyph embeddings + mask, and SigLIP image embeddings (zeros for text-to-video)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[:, 4:] = 0  # padded prompt tokens
    glyph_mask = torch.zeros(batch, 5, dtype=torch.long)
    glyph_mask[:, :2] = 1  # two glyph tokens, three padding
    image_embeds = torch.randn(batch, 3, 16, generator=generator)
    given = dict(
        hidden_states=torch.randn(batch, 9, 3, 4, 4, generator=generator),
        timestep=torch.full((batch,), timestep),
        encoder_hidden_states=torch.randn(batch, 6, 16, generator=generator),
        encoder_attention_mask=mask,
        encoder_hidden_states_2=torch.randn(batch, 5, 12, generator=generator),
        encoder_attention_mask_2=glyph_mask,
        image_embeds=image_embeds if image else torch.zeros_like(image_embeds),
    )
    given.update(extra)
    return given


def test_caching_off_equals_the_unhooked_forward_in_both_guider_branches(model):
    # The pipelines run the guider's batches one by one in cache_context("pred_cond"/"pred_uncond").
    calls = [
        ("pred_cond", inputs(1, 1000.0, return_dict=False)),
        ("pred_uncond", inputs(2, 1000.0, return_dict=False)),
        ("pred_cond", inputs(3, 600.0)),
        ("pred_uncond", inputs(4, 600.0, return_dict=False)),
        ("pred_cond", inputs(5, 200.0)),
        ("pred_uncond", inputs(6, 200.0)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_image_to_video_and_a_batch_of_two_with_different_masks(model):
    calls = [("pred_cond", inputs(1, 900.0, image=True)), ("pred_uncond", inputs(2, 900.0, image=True))]
    given = inputs(7, 800.0, batch=2, image=True, return_dict=False)
    given["encoder_attention_mask"][1, 2:] = 0
    given["encoder_attention_mask_2"][1] = 0  # no glyph text in the second prompt
    calls.append((None, given))
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_step_distilled_with_meanflow_timestep_r():
    distilled = make_model(use_meanflow=True)

    def step(seed, timestep, next_timestep, **extra):
        return inputs(seed, timestep, image=True, timestep_r=torch.tensor([next_timestep]), **extra)

    calls = [("pred_cond", step(1, 1000.0, 875.0)), ("pred_cond", step(1, 875.0, 750.0, return_dict=False))]
    assert_caching_off_matches_unhooked(distilled, calls)
    assert_cached_call_is_input_plus_residual(distilled, step(1, 1000.0, 875.0), step(2, 875.0, 750.0))


def test_cached_call_is_input_plus_residual(model):
    (residual,) = assert_cached_call_is_input_plus_residual(model, inputs(1, 900.0), inputs(2, 850.0))
    assert residual.shape == (1, 12, 32)  # image tokens only: the text stream is not cached
    assert_cached_call_is_input_plus_residual(
        model, inputs(3, 900.0, image=True), inputs(4, 850.0, image=True, return_dict=False), "pred_uncond"
    )


@torch.no_grad()
def test_modulated_input_is_the_first_block_norm1_image_output(model):
    given = inputs(3, 400.0)
    context = get_extractor(EXTRACTOR)(model, **given)
    image = model.x_embedder(given["hidden_states"])
    assert torch.equal(context.hidden_states, image)
    assert context.encoder_hidden_states is None
    temb = model.time_embed(given["timestep"])
    assert torch.equal(context.temb, temb)
    norm1 = model.transformer_blocks[0].norm1
    shift, scale = norm1.linear(norm1.silu(temb)).chunk(6, dim=1)[:2]
    expected = norm1.norm(image) * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(context.modulated_input, expected, rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(400.0)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(model):
    calls = [
        ("pred_cond", inputs(1, 900.0, attention_kwargs={"scale": 0.5})),
        ("pred_cond", inputs(2, 700.0, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)
