"""Fidelity of the CogView4 extractor on a tiny CogView4Transformer2DModel (the real diffusers class)."""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor


@pytest.fixture(scope="module")
def model():
    from diffusers import CogView4Transformer2DModel

    torch.manual_seed(0)
    return CogView4Transformer2DModel(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        text_embed_dim=24,
        time_embed_dim=16,
        condition_dim=8,
        pos_embed_max_size=16,
        sample_size=8,
        rope_axes_dim=(16, 16),
    ).eval()


def inputs(seed: int, timestep: float = 700.0, batch: int = 1, **extra) -> dict:
    """Shaped as CogView4Pipeline passes them (latents NCHW, GLM embeddings, SDXL-style size conditions)."""
    generator = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, 4, 8, 8, generator=generator),
        encoder_hidden_states=torch.randn(batch, 6, 24, generator=generator),
        timestep=torch.full((batch,), timestep),
        original_size=torch.tensor([[64.0, 64.0]] * batch),
        target_size=torch.tensor([[64.0, 64.0]] * batch),
        crop_coords=torch.tensor([[0.0, 0.0]] * batch),
        **extra,
    )


def test_caching_off_equals_the_unhooked_forward_across_branches_and_steps(model):
    calls = [
        ("cond", inputs(1, 950.0, return_dict=False)),
        ("uncond", inputs(2, 950.0, return_dict=False)),
        ("cond", inputs(3, 600.0)),
        ("uncond", inputs(4, 600.0)),
        ("cond", inputs(5, 250.0, return_dict=False)),
        ("uncond", inputs(6, 250.0)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_with_text_mask_precomputed_rope_and_batch_two(model):
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    rope = model.rope(torch.zeros(2, 4, 8, 8))
    calls = [
        (None, inputs(7, 900.0, batch=2, attention_mask=mask)),
        (None, inputs(8, 500.0, batch=2, attention_mask=mask, image_rotary_emb=rope, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_cached_call_is_input_plus_residual(model):
    (residual,) = assert_cached_call_is_input_plus_residual(model, inputs(1, 900.0), inputs(2, 850.0))
    assert residual.shape == (1, 16, 32)  # image tokens only: the text stream is not cached
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    assert_cached_call_is_input_plus_residual(
        model, inputs(3, 900.0, attention_mask=mask), inputs(4, 850.0, attention_mask=mask), "cond"
    )


@torch.no_grad()
def test_modulated_input_is_the_first_block_norm1_image_output(model):
    given = inputs(3, 400.0)
    context = get_extractor("CogView4Transformer2DModel")(model, **given)
    image, text = model.patch_embed(given["hidden_states"], given["encoder_hidden_states"])
    assert torch.equal(context.hidden_states, image)
    assert context.encoder_hidden_states is None
    temb = torch.nn.functional.silu(
        model.time_condition_embed(
            given["timestep"], given["original_size"], given["target_size"], given["crop_coords"], image.dtype
        )
    )
    assert torch.equal(context.temb, temb)
    norm1 = model.transformer_blocks[0].norm1
    shift, _, scale = norm1.linear(temb).chunk(12, dim=1)[:3]
    expected = norm1.norm(image) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
    torch.testing.assert_close(context.modulated_input, expected, rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(400.0)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(model):
    calls = [
        ("cond", inputs(1, 900.0, attention_kwargs={"scale": 0.5})),
        ("cond", inputs(2, 700.0, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)
