"""Fidelity of the Chroma extractor on a tiny ChromaTransformer2DModel (the real diffusers class)."""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor


@pytest.fixture(scope="module")
def model():
    from diffusers import ChromaTransformer2DModel

    torch.manual_seed(0)
    return ChromaTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 6, 6),
        approximator_num_channels=16,
        approximator_hidden_dim=32,
        approximator_layers=2,
    ).eval()


def text_and_image_mask(valid_text: int, batch: int = 1) -> torch.Tensor:
    """As ChromaPipeline._prepare_attention_mask builds it: the T5 mask, then ones for the 16 image tokens."""
    text = torch.arange(8)[None].expand(batch, 8) < valid_text
    return torch.cat([text, torch.ones(batch, 16, dtype=torch.bool)], dim=1)


def inputs(seed: int, timestep: float = 0.7, batch: int = 1, **extra) -> dict:
    """Shaped as ChromaPipeline passes them: packed latents, T5 states, 2D ids, timestep / 1000."""
    generator = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, 16, 16, generator=generator),
        encoder_hidden_states=torch.randn(batch, 8, 32, generator=generator),
        timestep=torch.full((batch,), timestep),
        img_ids=torch.randn(16, 3, generator=generator),
        txt_ids=torch.zeros(8, 3),
        **extra,
    )


def test_caching_off_equals_the_unhooked_forward_across_branches_and_steps(model):
    calls = [
        ("cond", inputs(1, 0.95, attention_mask=text_and_image_mask(5), return_dict=False)),
        ("uncond", inputs(2, 0.95, attention_mask=text_and_image_mask(3), return_dict=False)),
        ("cond", inputs(3, 0.6)),
        ("uncond", inputs(4, 0.6)),
        ("cond", inputs(5, 0.25, return_dict=False)),
        ("uncond", inputs(6, 0.25, attention_mask=text_and_image_mask(8))),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_with_controlnet_residuals_batched_ids_and_batch_two(model):
    generator = torch.Generator().manual_seed(8)
    block_samples = [torch.randn(2, 16, 32, generator=generator)]
    single_samples = [torch.randn(2, 16, 32, generator=generator)] * 2
    calls = [
        (None, inputs(7, 0.9, batch=2, controlnet_block_samples=block_samples)),
        (
            None,
            inputs(
                8,
                0.5,
                batch=2,
                attention_mask=text_and_image_mask(4, batch=2),
                controlnet_block_samples=block_samples * 2,
                controlnet_single_block_samples=single_samples,
                controlnet_blocks_repeat=True,
                return_dict=False,
            ),
        ),
    ]
    batched_ids = inputs(9, 0.3, batch=2)
    batched_ids["img_ids"] = batched_ids["img_ids"][None].expand(2, 16, 3)  # deprecated 3D ids
    calls.append((None, batched_ids))
    assert_caching_off_matches_unhooked(model, calls)


def test_cached_call_is_input_plus_residual(model):
    (residual,) = assert_cached_call_is_input_plus_residual(model, inputs(1, 0.9), inputs(2, 0.8))
    assert residual.shape == (1, 16, 32)  # image tokens only: the text stream is not cached
    mask = text_and_image_mask(5)
    assert_cached_call_is_input_plus_residual(
        model, inputs(3, 0.9, attention_mask=mask), inputs(4, 0.8, attention_mask=mask), "cond"
    )


@torch.no_grad()
def test_modulated_input_is_the_first_block_norm1_with_its_approximator_rows(model):
    given = inputs(3, 0.4)
    context = get_extractor("ChromaTransformer2DModel")(model, **given)
    image = model.x_embedder(given["hidden_states"])
    assert torch.equal(context.hidden_states, image)
    assert context.encoder_hidden_states is None
    pooled = model.distilled_guidance_layer(model.time_text_embed(given["timestep"] * 1000))
    torch.testing.assert_close(context.temb, pooled, rtol=0, atol=1e-6)
    # 2 single blocks take rows 0-5; block 0's image modulation is the next 6: shift, scale, gate, ...
    shift, scale = pooled[:, 6], pooled[:, 7]
    norm = torch.nn.functional.layer_norm(image, (32,), eps=1e-6)
    expected = norm * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(context.modulated_input, expected, rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(0.4)


def test_lora_scale_in_joint_attention_kwargs_is_accepted_with_caching_off(model):
    calls = [
        ("cond", inputs(1, 0.9, joint_attention_kwargs={"scale": 0.5})),
        ("cond", inputs(2, 0.7, joint_attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)
