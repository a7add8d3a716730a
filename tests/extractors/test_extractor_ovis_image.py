"""Fidelity of the Ovis-Image extractor on a tiny OvisImageTransformer2DModel (the real diffusers class)."""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache

TEXT_TOKENS, GRID, TEXT_DIM = 6, 4, 24  # a 4x4 latent grid: 16 image tokens


def make_ovis_transformer():
    from diffusers import OvisImageTransformer2DModel

    torch.manual_seed(0)
    model = OvisImageTransformer2DModel(
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        axes_dims_rope=(4, 6, 6),
    )
    return model.eval()


@pytest.fixture(scope="module")
def ovis_transformer():
    return make_ovis_transformer()


def ovis_inputs(seed: int, timestep: float = 0.7, batched_ids: bool = False, **extra) -> dict:
    """Shaped as OvisImagePipeline passes them: packed latents, timestep / 1000, 2-D ids."""
    generator = torch.Generator().manual_seed(seed)
    txt_ids = torch.zeros(TEXT_TOKENS, 3)
    txt_ids[:, 1] = txt_ids[:, 2] = torch.arange(TEXT_TOKENS)
    img_ids = torch.zeros(GRID, GRID, 3)
    img_ids[..., 1] = torch.arange(GRID)[:, None]
    img_ids[..., 2] = torch.arange(GRID)[None, :]
    img_ids = img_ids.reshape(GRID * GRID, 3)
    if batched_ids:  # deprecated upstream, still accepted
        txt_ids, img_ids = txt_ids[None], img_ids[None]
    return dict(
        hidden_states=torch.randn(1, GRID * GRID, 16, generator=generator),
        timestep=torch.full((1,), timestep),
        encoder_hidden_states=torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=generator),
        txt_ids=txt_ids,
        img_ids=img_ids,
        **extra,
    )


@pytest.mark.parametrize("return_dict", [True, False])
def test_caching_off_equals_the_unhooked_forward_in_both_cfg_branches(ovis_transformer, return_dict):
    calls = [
        (branch, ovis_inputs(seed, t, return_dict=return_dict))
        for seed, (branch, t) in enumerate([("cond", 0.9), ("uncond", 0.9), ("cond", 0.6), ("uncond", 0.6)])
    ]
    calls.append((None, ovis_inputs(9, 0.3, batched_ids=True, return_dict=return_dict)))
    assert_caching_off_matches_unhooked(ovis_transformer, calls)


def test_lora_scale_in_joint_attention_kwargs_is_accepted_with_caching_off(ovis_transformer):
    calls = [
        ("cond", ovis_inputs(1, 0.9, joint_attention_kwargs={"scale": 0.5})),
        ("cond", ovis_inputs(2, 0.6, joint_attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(ovis_transformer, calls)
    assert get_extractor("OvisImageTransformer2DModel").lora_kwargs == "joint_attention_kwargs"


def test_caching_off_with_gradient_checkpointing():
    model = make_ovis_transformer()
    model.enable_gradient_checkpointing()
    inputs = ovis_inputs(3)
    reference = model(**inputs).sample
    apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=(1.0, 0.0)))
    try:
        output = model(**inputs).sample
    finally:
        remove_teacache(model)
    torch.testing.assert_close(output, reference, rtol=1e-6, atol=1e-6)
    assert output.requires_grad


def test_cached_call_returns_postprocess_of_input_plus_cached_residual(ovis_transformer):
    (residual,) = assert_cached_call_is_input_plus_residual(ovis_transformer, ovis_inputs(1, 0.9), ovis_inputs(2, 0.8))
    assert residual.shape == (1, GRID * GRID, 32)
    first, second = ovis_inputs(3, 0.9, return_dict=False), ovis_inputs(4, 0.8, return_dict=False)
    assert_cached_call_is_input_plus_residual(ovis_transformer, first, second, "uncond")


@torch.no_grad()
def test_modulated_input_is_the_first_block_norm1_output(ovis_transformer):
    model = ovis_transformer
    inputs = ovis_inputs(5, 0.7)
    context = get_extractor("OvisImageTransformer2DModel")(model, **inputs)
    hidden = model.x_embedder(inputs["hidden_states"])
    temb = model.timestep_embedder(model.time_proj(inputs["timestep"] * 1000))
    assert torch.equal(context.hidden_states, hidden)
    assert torch.equal(context.temb, temb)
    expected, *_ = model.transformer_blocks[0].norm1(hidden, emb=temb)
    assert torch.equal(context.modulated_input, expected)
    assert context.encoder_hidden_states is None
    assert context.timestep == pytest.approx(0.7)
