"""Fidelity of the Lumina2 extractor on a tiny Lumina2Transformer2DModel (the real diffusers class).

Lumina2Transformer2DModel has no cache_context (no CacheMixin) and Lumina2Pipeline sets none, so
every call here runs in the default branch.
"""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache

CAPTION, CAPTION_DIM, LATENT = 8, 24, 8  # 8 caption slots; an 8x8 latent, patch 2: 16 image tokens


def make_lumina2_transformer():
    from diffusers import Lumina2Transformer2DModel

    torch.manual_seed(0)
    model = Lumina2Transformer2DModel(
        sample_size=LATENT,
        patch_size=2,
        in_channels=4,
        hidden_size=32,
        num_layers=2,
        num_refiner_layers=1,
        num_attention_heads=2,
        num_kv_heads=1,  # grouped-query attention, as the real model (24 heads, 8 kv heads)
        multiple_of=16,
        axes_dim_rope=(4, 6, 6),
        axes_lens=(64, 32, 32),
        cap_feat_dim=CAPTION_DIM,
    )
    return model.eval()


@pytest.fixture(scope="module")
def lumina2_transformer():
    return make_lumina2_transformer()


def lumina2_inputs(seed: int, timestep: float = 0.3, caption_lengths=(5,), **extra) -> dict:
    """Shaped as Lumina2Pipeline passes them: latents (B, C, H, W), timestep rising from 0 (noise)
    to 1, caption features padded to a fixed length with the tokenizer's 0/1 mask."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(caption_lengths)
    mask = torch.zeros(batch, CAPTION, dtype=torch.int64)
    for i, length in enumerate(caption_lengths):
        mask[i, :length] = 1
    return dict(
        hidden_states=torch.randn(batch, 4, LATENT, LATENT, generator=generator),
        timestep=torch.full((batch,), timestep),
        encoder_hidden_states=torch.randn(batch, CAPTION, CAPTION_DIM, generator=generator),
        encoder_attention_mask=mask,
        **extra,
    )


@pytest.mark.parametrize("return_dict", [True, False])
def test_caching_off_equals_the_unhooked_forward_over_cond_and_uncond_calls(lumina2_transformer, return_dict):
    # As the pipeline calls it: cond (long caption) then uncond (short caption) at each rising timestep.
    calls = [
        (None, lumina2_inputs(seed, t, caption_lengths=(length,), return_dict=return_dict))
        for seed, (t, length) in enumerate([(0.1, 7), (0.1, 2), (0.5, 7), (0.5, 2), (0.9, 7)])
    ]
    assert_caching_off_matches_unhooked(lumina2_transformer, calls)


def test_caching_off_with_a_batch_of_unequal_captions_uses_the_joint_mask(lumina2_transformer):
    unequal = lumina2_inputs(1, 0.2, caption_lengths=(7, 3))
    equal = lumina2_inputs(2, 0.4, caption_lengths=(4, 4), return_dict=False)
    assert_caching_off_matches_unhooked(lumina2_transformer, [(None, unequal), (None, equal)])
    context = get_extractor("Lumina2Transformer2DModel")(lumina2_transformer, **unequal)
    assert context.hidden_states.shape == (2, 7 + 16, 32)
    # the shorter sample's padding stays zero going in
    assert torch.count_nonzero(context.hidden_states[1, 3 + 16 :]) == 0


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(lumina2_transformer):
    calls = [
        (None, lumina2_inputs(1, 0.2, attention_kwargs={"scale": 0.5})),
        (None, lumina2_inputs(2, 0.6, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(lumina2_transformer, calls)
    assert get_extractor("Lumina2Transformer2DModel").lora_kwargs == "attention_kwargs"


def test_caching_off_with_gradient_checkpointing():
    model = make_lumina2_transformer()
    model.enable_gradient_checkpointing()
    inputs = lumina2_inputs(3, caption_lengths=(6, 2))
    reference = model(**inputs).sample
    apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=(1.0, 0.0)))
    try:
        output = model(**inputs).sample
    finally:
        remove_teacache(model)
    torch.testing.assert_close(output, reference, rtol=1e-6, atol=1e-6)
    assert output.requires_grad


def test_cached_call_returns_postprocess_of_input_plus_cached_residual(lumina2_transformer):
    (residual,) = assert_cached_call_is_input_plus_residual(
        lumina2_transformer, lumina2_inputs(1, 0.2), lumina2_inputs(2, 0.3)
    )
    assert residual.shape == (1, 5 + 16, 32)
    first = lumina2_inputs(3, 0.2, caption_lengths=(6, 3), return_dict=False)
    second = lumina2_inputs(4, 0.3, caption_lengths=(6, 3), return_dict=False)
    assert_cached_call_is_input_plus_residual(lumina2_transformer, first, second)


@torch.no_grad()
def test_modulated_input_is_the_first_main_layer_norm1_of_the_joint_sequence(lumina2_transformer):
    model = lumina2_transformer
    inputs = lumina2_inputs(5, 0.3, caption_lengths=(5,))
    context = get_extractor("Lumina2Transformer2DModel")(model, **inputs)

    latents, mask = inputs["hidden_states"], inputs["encoder_attention_mask"]
    temb, caption = model.time_caption_embed(latents, inputs["timestep"], inputs["encoder_hidden_states"])
    image, caption_rope, image_rope, _, _, _ = model.rope_embedder(latents, mask)
    image = model.x_embedder(image)
    caption = model.context_refiner[0](caption, mask, caption_rope)
    image = model.noise_refiner[0](image, None, image_rope, temb)
    joint = torch.cat([caption[:, :5], image], dim=1)  # one sample: caption tokens, then image tokens

    assert torch.equal(context.hidden_states, joint)
    assert torch.equal(context.temb, temb)
    expected, *_ = model.layers[0].norm1(joint, temb)
    assert torch.equal(context.modulated_input, expected)
    assert context.encoder_hidden_states is None
    assert context.timestep == pytest.approx(0.7)  # recorded as 1 - t: falls over a generation
