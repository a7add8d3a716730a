"""Fidelity of the Qwen-Image extractor on tiny QwenImageTransformer2DModels (the real diffusers class)."""

import pytest
import torch
from support import (
    COEFFICIENTS,
    assert_cached_call_is_input_plus_residual,
    assert_caching_off_matches_unhooked,
)

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache

LATENT = 4  # latent channels; the transformer sees them packed 2x2
GRID = 4  # 4x4 patches per image
TEXT = 10  # text tokens
TEXT_DIM = 32


def make_qwen_transformer(**config) -> torch.nn.Module:
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    model = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=LATENT * 4,
        out_channels=LATENT,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        axes_dims_rope=(4, 6, 6),
        **config,
    )
    return model.eval()


@pytest.fixture(scope="module")
def qwen_transformer():
    return make_qwen_transformer()


def qwen_inputs(seed: int, timestep: float = 0.7, batch: int = 1, images: int = 1, padded: bool = False, **extra):
    """Shaped as QwenImagePipeline passes them; images > 1 appends condition-image latents as the Edit pipelines do."""
    generator = torch.Generator().manual_seed(seed)
    mask = None
    if padded:  # the shorter prompt of a batch is zero-padded and masked, as encode_prompt does
        mask = torch.ones(batch, TEXT, dtype=torch.long)
        mask[-1, TEXT - 3 :] = 0
    inputs = dict(
        hidden_states=torch.randn(batch, images * GRID * GRID, LATENT * 4, generator=generator),
        encoder_hidden_states=torch.randn(batch, TEXT, TEXT_DIM, generator=generator),
        encoder_hidden_states_mask=mask,
        timestep=torch.full((batch,), timestep),
        img_shapes=[[(1, GRID, GRID)] * images] * batch,
        guidance=None,
        attention_kwargs={},
        return_dict=False,
    )
    return {**inputs, **extra}


def cfg_calls(**extra):
    """Decreasing timesteps, cond and uncond alternating as QwenImagePipeline's true CFG does."""
    calls = []
    for step, t in enumerate((1.0, 0.6, 0.02)):
        calls.append(("cond", qwen_inputs(2 * step, t, **extra)))
        calls.append(("uncond", qwen_inputs(2 * step + 1, t, **extra)))
    return calls


@pytest.mark.parametrize("return_dict", [True, False])
def test_caching_off_equals_the_unhooked_forward_in_both_cfg_branches(qwen_transformer, return_dict):
    calls = cfg_calls(return_dict=return_dict)
    calls.append((None, qwen_inputs(9, 0.5, return_dict=return_dict, attention_kwargs=None)))
    assert_caching_off_matches_unhooked(qwen_transformer, calls)


def test_caching_off_with_masks_controlnet_residuals_and_a_batch(qwen_transformer):
    generator = torch.Generator().manual_seed(11)
    controlnet = [torch.randn(2, GRID * GRID, 32, generator=generator) for _ in range(2)]
    calls = [
        ("cond", qwen_inputs(1, 0.9, batch=2, padded=True, controlnet_block_samples=controlnet)),
        ("uncond", qwen_inputs(2, 0.9, batch=2, padded=True, controlnet_block_samples=controlnet[:1])),
        ("cond", qwen_inputs(3, 0.5, batch=2, padded=True, return_dict=True)),
    ]
    # an all-ones mask takes the same path as the pipeline's None (it drops all-valid masks)
    calls.append(("uncond", qwen_inputs(4, 0.5, batch=2, encoder_hidden_states_mask=torch.ones(2, TEXT))))
    assert_caching_off_matches_unhooked(qwen_transformer, calls)


def test_caching_off_for_edit_inputs_with_condition_images():
    """Edit/Edit-2509 concatenate the reference image latents; Edit-2511 (zero_cond_t) modulates them at t=0."""
    assert_caching_off_matches_unhooked(make_qwen_transformer(), cfg_calls(images=2))
    zero_cond = make_qwen_transformer(zero_cond_t=True)
    assert_caching_off_matches_unhooked(zero_cond, cfg_calls(images=3))
    assert_cached_call_is_input_plus_residual(
        zero_cond, qwen_inputs(1, 0.9, images=2), qwen_inputs(2, 0.8, images=2), "cond"
    )


def test_caching_off_for_layered_inputs_with_additional_t_cond():
    """Qwen-Image-Layered: an RGB/RGBA embedding added to temb, layer-3D RoPE over layers + condition image."""
    model = make_qwen_transformer(use_additional_t_cond=True, use_layer3d_rope=True)
    is_rgb = torch.zeros(1, dtype=torch.long)
    assert_caching_off_matches_unhooked(model, cfg_calls(images=3, additional_t_cond=is_rgb))


@torch.no_grad()
def test_guidance_fails_the_same_way_hooked_and_unhooked(qwen_transformer):
    """0.42.1 passes guidance positionally into an embedder that takes none: the hook must not hide that."""
    inputs = qwen_inputs(5, guidance=torch.full((1,), 3.5))
    with pytest.raises(TypeError) as unhooked:
        qwen_transformer(**inputs)
    apply_teacache(qwen_transformer, TeaCacheConfig(thresh=0.0, coefficients=COEFFICIENTS))
    try:
        with pytest.raises(TypeError) as hooked:
            qwen_transformer(**inputs)
    finally:
        remove_teacache(qwen_transformer)
    assert str(hooked.value) == str(unhooked.value)


def test_cached_call_returns_postprocess_of_input_plus_cached_residual(qwen_transformer):
    first, second = qwen_inputs(1, 0.9, padded=True), qwen_inputs(2, 0.8, padded=True)
    (residual,) = assert_cached_call_is_input_plus_residual(qwen_transformer, first, second)
    assert residual.shape == (1, GRID * GRID, 32)
    assert_cached_call_is_input_plus_residual(qwen_transformer, first, second, "uncond")


@torch.no_grad()
@pytest.mark.parametrize("zero_cond_t", [False, True])
def test_modulated_input_is_the_first_block_img_norm1_modulated_by_img_mod(zero_cond_t):
    model = make_qwen_transformer(zero_cond_t=zero_cond_t)
    inputs = qwen_inputs(3, 0.7, images=2)
    context = get_extractor("QwenImageTransformer2DModel")(model, **inputs)

    hidden = model.img_in(inputs["hidden_states"])
    assert torch.equal(context.hidden_states, hidden)
    assert context.encoder_hidden_states is None
    timestep = inputs["timestep"]
    if zero_cond_t:
        timestep = torch.cat([timestep, timestep * 0])
    temb = model.time_text_embed(timestep, hidden)
    assert torch.equal(context.temb, temb)

    block = model.transformer_blocks[0]
    shift, scale, _ = block.img_mod(temb)[:, : 3 * 32].chunk(3, dim=-1)
    normed = block.img_norm1(hidden)
    if zero_cond_t:  # target tokens take the real timestep's shift/scale, condition tokens those of t=0
        row = (torch.arange(hidden.shape[1]) >= GRID * GRID).long()
        expected = normed * (1 + scale[row][None]) + shift[row][None]
    else:
        expected = normed * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(context.modulated_input, expected, rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(0.7)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(qwen_transformer):
    calls = cfg_calls(attention_kwargs={"scale": 0.5})[:4]
    assert_caching_off_matches_unhooked(qwen_transformer, calls)
    # the caller's dict is left as it was: the scale is popped from a copy, as apply_lora_scale does
    assert calls[0][1]["attention_kwargs"] == {"scale": 0.5}
