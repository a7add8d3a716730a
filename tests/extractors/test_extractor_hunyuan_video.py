"""Fidelity of the HunyuanVideo extractor on tiny HunyuanVideoTransformer3DModel instances (the real class)."""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor

EXTRACTOR = "HunyuanVideoTransformer3DModel"


def make_model(image_condition_type: str | None = None):
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(0)
    latent_concat = image_condition_type == "latent_concat"
    return HunyuanVideoTransformer3DModel(
        in_channels=9 if latent_concat else 4,  # latents + image latents + mask, as in the 33-channel I2V
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=2,
        patch_size_t=1,
        guidance_embeds=not latent_concat,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(4, 6, 6),
        image_condition_type=image_condition_type,
    ).eval()


@pytest.fixture(scope="module")
def t2v():
    return make_model()


@pytest.fixture(scope="module")
def token_replace():
    return make_model("token_replace")


def inputs(seed: int, timestep: float = 700.0, batch: int = 1, channels: int = 4, guidance: bool = True, **extra):
    """Shaped as HunyuanVideoPipeline passes them: 5D latents, LLaMA embeddings + mask, CLIP pooled
    projection, the embedded guidance scaled by 1000."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[:, 4:] = 0  # padded prompt tokens
    given = dict(
        hidden_states=torch.randn(batch, channels, 3, 4, 4, generator=generator),
        timestep=torch.full((batch,), timestep),
        encoder_hidden_states=torch.randn(batch, 6, 16, generator=generator),
        encoder_attention_mask=mask,
        pooled_projections=torch.randn(batch, 8, generator=generator),
        guidance=torch.full((batch,), 6000.0) if guidance else None,
    )
    given.update(extra)
    return given


def test_caching_off_equals_the_unhooked_forward_in_both_cfg_branches(t2v):
    # HunyuanVideoPipeline names its true-CFG calls "cond" and "uncond".
    calls = [
        ("cond", inputs(1, 1000.0, return_dict=False)),
        ("uncond", inputs(2, 1000.0, return_dict=False)),
        ("cond", inputs(3, 600.0)),
        ("uncond", inputs(4, 600.0, return_dict=False)),
        ("cond", inputs(5, 200.0)),
        ("uncond", inputs(6, 200.0)),
    ]
    assert_caching_off_matches_unhooked(t2v, calls)


def test_caching_off_batch_of_two_with_different_prompt_lengths(t2v):
    given = inputs(7, 800.0, batch=2)
    given["encoder_attention_mask"][1, 2:] = 0
    given["encoder_attention_mask"] = given["encoder_attention_mask"].float()  # the I2V pipeline passes floats
    assert_caching_off_matches_unhooked(t2v, [(None, given)])


def test_caching_off_token_replace_i2v_unnamed_cfg_calls(token_replace):
    # HunyuanVideoImageToVideoPipeline calls cond and uncond without a cache_context.
    calls = [
        (None, inputs(1, 1000.0, return_dict=False)),
        (None, inputs(2, 1000.0, return_dict=False)),
        (None, inputs(3, 500.0)),
        (None, inputs(4, 500.0, attention_kwargs={"scale": 0.5})),
    ]
    assert_caching_off_matches_unhooked(token_replace, calls)
    (residual,) = assert_cached_call_is_input_plus_residual(token_replace, inputs(1, 900.0), inputs(2, 850.0))
    assert residual.shape == (1, 12, 32)


def test_caching_off_latent_concat_i2v_without_guidance():
    model = make_model("latent_concat")
    calls = [(None, inputs(1, 900.0, channels=9, guidance=False)), (None, inputs(2, 400.0, channels=9, guidance=False))]
    assert_caching_off_matches_unhooked(model, calls)
    assert_cached_call_is_input_plus_residual(
        model, inputs(1, 900.0, channels=9, guidance=False), inputs(2, 850.0, channels=9, guidance=False)
    )


def test_cached_call_is_input_plus_residual(t2v):
    (residual,) = assert_cached_call_is_input_plus_residual(t2v, inputs(1, 900.0), inputs(2, 850.0))
    assert residual.shape == (1, 12, 32)  # image tokens only: the text stream is not cached
    assert_cached_call_is_input_plus_residual(t2v, inputs(3, 900.0), inputs(4, 850.0, return_dict=False), "cond")


@torch.no_grad()
def test_modulated_input_is_the_first_double_block_norm1_image_output(t2v):
    given = inputs(3, 400.0)
    context = get_extractor(EXTRACTOR)(t2v, **given)
    image = t2v.x_embedder(given["hidden_states"])
    assert torch.equal(context.hidden_states, image)
    assert context.encoder_hidden_states is None
    temb, token_replace_emb = t2v.time_text_embed(given["timestep"], given["pooled_projections"], given["guidance"])
    assert token_replace_emb is None
    assert torch.equal(context.temb, temb)
    norm1 = t2v.transformer_blocks[0].norm1
    shift, scale = norm1.linear(norm1.silu(temb)).chunk(6, dim=1)[:2]
    expected = norm1.norm(image) * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(context.modulated_input, expected, rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(400.0)


@torch.no_grad()
def test_token_replace_modulated_input_modulates_the_first_frame_with_the_t0_embedding(token_replace):
    given = inputs(5, 400.0)
    context = get_extractor(EXTRACTOR)(token_replace, **given)
    image = token_replace.x_embedder(given["hidden_states"])
    temb, token_replace_emb = token_replace.time_text_embed(
        given["timestep"], given["pooled_projections"], given["guidance"]
    )
    norm1 = token_replace.transformer_blocks[0].norm1
    shift, scale = norm1.linear(norm1.silu(temb)).chunk(6, dim=1)[:2]
    tr_shift, tr_scale = norm1.linear(norm1.silu(token_replace_emb)).chunk(6, dim=1)[:2]
    normed = norm1.norm(image)
    first = 2 * 2  # one latent frame of 4x4 in 2x2 patches
    expected = torch.cat(
        [
            normed[:, :first] * (1 + tr_scale[:, None]) + tr_shift[:, None],
            normed[:, first:] * (1 + scale[:, None]) + shift[:, None],
        ],
        dim=1,
    )
    torch.testing.assert_close(context.modulated_input, expected, rtol=0, atol=1e-6)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(t2v):
    calls = [
        ("cond", inputs(1, 900.0, attention_kwargs={"scale": 0.5})),
        ("cond", inputs(2, 700.0, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(t2v, calls)
