"""Fidelity of the PixArt extractor on tiny PixArtTransformer2DModel instances (the real diffusers class)."""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor


def make_model(alpha: bool):
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=12,  # inner 24: adaln_single's size embeddings need a multiple of 3
        in_channels=4,
        out_channels=8,  # learned sigma, as both released models
        num_layers=2,
        cross_attention_dim=24,
        sample_size=8,
        patch_size=2,
        use_additional_conditions=alpha,  # alpha 1024px: resolution/aspect_ratio; sigma: none
        caption_channels=20,
    ).eval()


@pytest.fixture(scope="module")
def alpha():
    return make_model(alpha=True)


@pytest.fixture(scope="module")
def sigma():
    return make_model(alpha=False)


def inputs(seed: int, timestep: int = 700, alpha: bool = True, batch: int = 2, **extra) -> dict:
    """Shaped as PixArtAlpha/SigmaPipeline pass them: CFG batched, T5 embeddings and 0/1 mask, micro-conditions."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 5, dtype=torch.long)
    mask[0, 2:] = 0
    if alpha:
        conditions = dict(resolution=torch.tensor([[64.0, 64.0]] * batch), aspect_ratio=torch.ones(batch, 1))
    else:
        conditions = dict(resolution=None, aspect_ratio=None)
    return dict(
        hidden_states=torch.randn(batch, 4, 8, 8, generator=generator),
        encoder_hidden_states=torch.randn(batch, 5, 20, generator=generator),
        encoder_attention_mask=mask,
        timestep=torch.full((batch,), timestep, dtype=torch.long),
        added_cond_kwargs=conditions,
        **extra,
    )


def test_caching_off_equals_the_unhooked_forward_alpha(alpha):
    # PixArt pipelines batch CFG and the class has no cache_context: one default branch.
    calls = [
        (None, inputs(1, 999, return_dict=False)),
        (None, inputs(2, 750)),
        (None, inputs(3, 400, return_dict=False)),
        (None, inputs(4, 50)),
    ]
    assert_caching_off_matches_unhooked(alpha, calls)


def test_caching_off_equals_the_unhooked_forward_sigma_with_masks_and_kwargs(sigma):
    bias = torch.zeros(2, 1, 5)
    bias[1, :, 3:] = -10000.0  # an already-converted cross-attention bias passes through untouched
    calls = [
        (None, inputs(5, 999, alpha=False)),
        (None, inputs(6, 600, alpha=False, attention_mask=torch.ones(2, 16, dtype=torch.long))),
        (None, dict(inputs(7, 300, alpha=False, return_dict=False), encoder_attention_mask=bias)),
        (None, inputs(8, 100, alpha=False, cross_attention_kwargs={})),
    ]
    assert_caching_off_matches_unhooked(sigma, calls)


def test_alpha_without_micro_conditions_is_refused_like_the_forward(alpha):
    given = inputs(1)
    given["added_cond_kwargs"] = None
    with pytest.raises(ValueError, match="added_cond_kwargs"):
        get_extractor("PixArtTransformer2DModel")(alpha, **given)


def test_cached_call_is_input_plus_residual(alpha, sigma):
    (residual,) = assert_cached_call_is_input_plus_residual(alpha, inputs(1, 900), inputs(2, 850))
    assert residual.shape == (2, 16, 24)
    assert_cached_call_is_input_plus_residual(
        sigma, inputs(3, 900, alpha=False), inputs(4, 850, alpha=False, return_dict=False)
    )


@torch.no_grad()
def test_modulated_input_is_what_the_first_block_feeds_its_self_attention(alpha):
    given = inputs(3, 400)
    context = get_extractor("PixArtTransformer2DModel")(alpha, **given)
    assert torch.equal(context.hidden_states, alpha.pos_embed(given["hidden_states"]))
    assert context.encoder_hidden_states is None
    seen = []
    handle = alpha.transformer_blocks[0].attn1.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        output = alpha(**given).sample
    finally:
        handle.remove()
    torch.testing.assert_close(context.modulated_input, seen[0], rtol=0, atol=1e-6)
    assert output.shape == (2, 8, 8, 8)  # learned sigma: twice the latent channels
    assert context.timestep == pytest.approx(400.0)


def test_scale_in_cross_attention_kwargs_is_passed_through_with_caching_off(sigma):
    # The forward has no apply_lora_scale; the blocks warn about and ignore `scale`, with or without the hook.
    calls = [
        (None, inputs(1, 900, alpha=False, cross_attention_kwargs={"scale": 0.5})),
        (None, inputs(2, 700, alpha=False, cross_attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(sigma, calls)
