"""Fidelity of the HiDream-I1 extractor on a tiny HiDreamImageTransformer2DModel (the real diffusers class)."""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor

LLAMA_LAYERS = [4, 1, 3, 0]  # one Llama layer per block (2 double + 2 single), deliberately out of order


@pytest.fixture(scope="module")
def model():
    from diffusers import HiDreamImageTransformer2DModel

    torch.manual_seed(0)
    return HiDreamImageTransformer2DModel(
        patch_size=2,
        in_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        caption_channels=[24, 20],  # [T5, Llama]
        text_emb_dim=12,
        num_routed_experts=2,
        num_activated_experts=1,
        axes_dims_rope=(8, 4, 4),
        max_resolution=(8, 8),  # max_seq 16: non-square latents are padded to it
        llama_layers=LLAMA_LAYERS,
    ).eval()


def inputs(seed: int, timestep: float = 700.0, batch: int = 1, height: int = 8, width: int = 8, **extra) -> dict:
    """Shaped as HiDreamImagePipeline passes them: latents NCHW, T5 states, the stacked Llama hidden states
    (layers, batch, seq, dim), pooled CLIP embeddings; CFG is one batch of [uncond, cond]."""
    generator = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, 4, height, width, generator=generator),
        timesteps=torch.full((batch,), timestep),
        encoder_hidden_states_t5=torch.randn(batch, 6, 24, generator=generator),
        encoder_hidden_states_llama3=torch.randn(5, batch, 5, 20, generator=generator),
        pooled_embeds=torch.randn(batch, 12, generator=generator),
        **extra,
    )


def patchified(model, seed: int, timestep: float, height: int = 4, width: int = 8, **extra) -> dict:
    """The already-patchified form the forward also takes: 3D tokens with masks, img_ids and img_sizes."""
    given = inputs(seed, timestep, height=height, width=width, **extra)
    tokens, masks, sizes, ids = model.patchify(given["hidden_states"])
    return {**given, "hidden_states": tokens, "hidden_states_masks": masks, "img_sizes": sizes, "img_ids": ids}


def test_caching_off_equals_the_unhooked_forward_across_steps(model):
    # The class has no cache_context (no CacheMixin) and the pipeline batches CFG, so one default branch.
    calls = [
        (None, inputs(1, 950.0, batch=2, return_dict=False)),
        (None, inputs(2, 600.0, batch=2)),
        (None, inputs(3, 250.0, return_dict=False)),
        (None, inputs(4, 100.0)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_with_non_square_padding_masks_and_patchified_input(model):
    calls = [
        (None, inputs(7, 900.0, batch=2, height=4, width=8)),  # masks made by patchify
        (None, patchified(model, 8, 600.0, return_dict=False)),  # masks, img_ids, img_sizes passed in
        (None, inputs(9, 300.0, batch=2, height=8, width=4, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_cached_call_is_input_plus_residual(model):
    (residual,) = assert_cached_call_is_input_plus_residual(model, inputs(1, 900.0), inputs(2, 850.0))
    assert residual.shape == (1, 16, 32)  # image tokens only: the text stream is not cached
    (residual,) = assert_cached_call_is_input_plus_residual(
        model, inputs(3, 900.0, batch=2, height=4, width=8), inputs(4, 850.0, batch=2, height=4, width=8)
    )
    assert residual.shape == (2, 16, 32)  # padded to max_seq


@torch.no_grad()
def test_modulated_input_is_the_timestep_embedding(model):
    given = inputs(3, 400.0, batch=2)
    context = get_extractor("HiDreamImageTransformer2DModel")(model, **given)
    tokens, *_ = model.patchify(given["hidden_states"])
    assert torch.equal(context.hidden_states, model.x_embedder(tokens))
    assert context.encoder_hidden_states is None
    embedding = model.t_embedder.timestep_embedder(model.t_embedder.time_proj(given["timesteps"]))
    torch.testing.assert_close(context.modulated_input, embedding, rtol=0, atol=1e-6)
    torch.testing.assert_close(context.temb, embedding + model.p_embedder(given["pooled_embeds"]), rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(400.0)
    # It follows the timestep alone, as in TeaCache4HiDream: other inputs leave it unchanged.
    other = get_extractor("HiDreamImageTransformer2DModel")(model, **inputs(4, 400.0, batch=2))
    assert torch.equal(other.modulated_input, context.modulated_input)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(model):
    calls = [
        (None, inputs(1, 900.0, attention_kwargs={"scale": 0.5})),
        (None, inputs(2, 700.0, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_a_mask_without_ids_is_refused_like_the_forward(model):
    given = patchified(model, 1, 500.0)
    given.pop("img_ids")
    with pytest.raises(ValueError, match="img_ids"):
        get_extractor("HiDreamImageTransformer2DModel")(model, **given)
