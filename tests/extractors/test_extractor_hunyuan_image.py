"""Fidelity of the HunyuanImage 2.1 extractor on tiny HunyuanImageTransformer2DModel instances (the real class)."""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor


def make_model(distilled: bool = False, refiner: bool = False):
    from diffusers import HunyuanImageTransformer2DModel

    torch.manual_seed(0)
    return HunyuanImageTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=(1, 1, 1) if refiner else (1, 1),
        guidance_embeds=distilled or refiner,
        text_embed_dim=24,
        text_embed_2_dim=None if refiner else 12,
        rope_axes_dim=(4, 6, 6) if refiner else (8, 8),
        use_meanflow=distilled,
    ).eval()


@pytest.fixture(scope="module")
def base():
    return make_model()


@pytest.fixture(scope="module")
def distilled():
    return make_model(distilled=True)


def inputs(seed: int, timestep: float = 700.0, batch: int = 1, glyph: bool = True, **extra) -> dict:
    """Shaped as HunyuanImagePipeline passes them: MLLM embeddings + mask, byT5 glyph embeddings + mask."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[:, 4:] = 0  # padded MLLM tokens
    given = dict(
        hidden_states=torch.randn(batch, 4, 4, 4, generator=generator),
        timestep=torch.full((batch,), timestep),
        encoder_hidden_states=torch.randn(batch, 6, 24, generator=generator),
        encoder_attention_mask=mask,
    )
    if glyph:
        glyph_mask = torch.zeros(batch, 5, dtype=torch.long)
        glyph_mask[:, :2] = 1  # two glyph tokens, three padding
        given.update(encoder_hidden_states_2=torch.randn(batch, 5, 12, generator=generator))
        given.update(encoder_attention_mask_2=glyph_mask)
    given.update(extra)
    return given


def distilled_inputs(seed: int, timestep: float, next_timestep: float, **extra) -> dict:
    return inputs(seed, timestep, timestep_r=torch.tensor([next_timestep]), guidance=torch.tensor([3250.0]), **extra)


def test_caching_off_equals_the_unhooked_forward_across_branches_and_steps(base):
    calls = [
        ("pred_cond", inputs(1, 950.0, return_dict=False)),
        ("pred_uncond", inputs(2, 950.0)),
        ("pred_cond", inputs(3, 600.0)),
        ("pred_uncond", inputs(4, 600.0, return_dict=False)),
        ("pred_cond", inputs(5, 250.0, glyph=False)),  # no glyph text in the prompt
        ("pred_uncond", inputs(6, 250.0, glyph=False, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(base, calls)


def test_caching_off_batch_of_two_with_different_masks(base):
    given = inputs(7, 800.0, batch=2)
    given["encoder_attention_mask"][1, 4:] = 1
    given["encoder_attention_mask_2"][1] = 0
    assert_caching_off_matches_unhooked(base, [(None, given)])


def test_caching_off_distilled_with_guidance_and_meanflow_timestep_r(distilled):
    calls = [(None, distilled_inputs(1, 1000.0, 875.0)), (None, distilled_inputs(1, 875.0, 750.0, return_dict=False))]
    assert_caching_off_matches_unhooked(distilled, calls)
    (residual,) = assert_cached_call_is_input_plus_residual(
        distilled, distilled_inputs(1, 1000.0, 875.0), distilled_inputs(2, 875.0, 750.0)
    )
    assert residual.shape == (1, 16, 32)


def test_caching_off_refiner_video_shaped_latents():
    model = make_model(refiner=True)
    generator = torch.Generator().manual_seed(3)

    def refiner_inputs(timestep, **extra):
        return dict(
            hidden_states=torch.randn(1, 4, 2, 4, 4, generator=generator),
            timestep=torch.tensor([timestep]),
            encoder_hidden_states=torch.randn(1, 6, 24, generator=generator),
            encoder_attention_mask=torch.ones(1, 6, dtype=torch.long),
            guidance=torch.tensor([3250.0]),
            **extra,
        )

    assert_caching_off_matches_unhooked(
        model, [("pred_cond", refiner_inputs(900.0)), ("pred_cond", refiner_inputs(500.0))]
    )
    assert_cached_call_is_input_plus_residual(model, refiner_inputs(900.0), refiner_inputs(800.0, return_dict=False))


def test_cached_call_is_input_plus_residual(base):
    (residual,) = assert_cached_call_is_input_plus_residual(base, inputs(1, 900.0), inputs(2, 850.0))
    assert residual.shape == (1, 16, 32)  # image tokens only: the text stream is not cached
    assert_cached_call_is_input_plus_residual(base, inputs(3, 900.0), inputs(4, 850.0, return_dict=False), "pred_cond")


@torch.no_grad()
def test_modulated_input_is_the_first_double_block_norm1_image_output(distilled):
    given = distilled_inputs(3, 400.0, 300.0)
    context = get_extractor("HunyuanImageTransformer2DModel")(distilled, **given)
    image = distilled.x_embedder(given["hidden_states"])
    assert torch.equal(context.hidden_states, image)
    assert context.encoder_hidden_states is None
    temb = distilled.time_guidance_embed(given["timestep"], guidance=given["guidance"], timestep_r=given["timestep_r"])
    assert torch.equal(context.temb, temb)
    norm1 = distilled.transformer_blocks[0].norm1
    shift, scale = norm1.linear(norm1.silu(temb)).chunk(6, dim=1)[:2]
    expected = norm1.norm(image) * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(context.modulated_input, expected, rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(400.0)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(base):
    calls = [
        ("pred_cond", inputs(1, 900.0, attention_kwargs={"scale": 0.5})),
        ("pred_cond", inputs(2, 700.0, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(base, calls)
