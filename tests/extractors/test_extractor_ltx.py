"""Fidelity of the LTX-Video extractor on a tiny LTXVideoTransformer3DModel (the real diffusers class).

Inputs are shaped as the pipelines pass them: LTXPipeline (one timestep per sample, RoPE from the
latent grid and rope_interpolation_scale), LTXImageToVideoPipeline (one timestep per token, 0 on the
first latent frame) and LTXConditionPipeline (precomputed video_coords).
"""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor

FRAMES, HEIGHT, WIDTH = 2, 3, 4  # latent grid
TOKENS = FRAMES * HEIGHT * WIDTH
CHANNELS, TEXT_DIM, TEXT_TOKENS = 8, 16, 6
ROPE_SCALE = (8 / 25, 32, 32)  # vae temporal ratio / frame_rate, vae spatial ratios


@pytest.fixture(scope="module")
def model():
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(0)
    return LTXVideoTransformer3DModel(
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=2,
        caption_channels=TEXT_DIM,
    ).eval()


def inputs(seed: int, t: float, batch: int = 2, **extra) -> dict:
    """As LTXPipeline passes them with CFG: negative and positive prompt stacked, t in [0, 1000]."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, TEXT_TOKENS)
    mask[0, 4:] = 0  # padding in the (shorter) negative prompt
    kwargs = dict(
        hidden_states=torch.randn(batch, TOKENS, CHANNELS, generator=generator),
        encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=generator),
        timestep=torch.full((batch,), t),
        encoder_attention_mask=mask,
        num_frames=FRAMES,
        height=HEIGHT,
        width=WIDTH,
        rope_interpolation_scale=ROPE_SCALE,
    )
    kwargs.update(extra)
    return kwargs


def image_to_video_inputs(seed: int, t: float, **extra) -> dict:
    """LTXImageToVideoPipeline: timestep per token, 0 where the first latent frame holds the image."""
    kwargs = inputs(seed, t, **extra)
    conditioning_mask = torch.zeros(2, TOKENS)
    conditioning_mask[:, : HEIGHT * WIDTH] = 1
    kwargs["timestep"] = kwargs["timestep"].unsqueeze(-1) * (1 - conditioning_mask)
    return kwargs


def condition_inputs(seed: int, t: float, **extra) -> dict:
    """LTXConditionPipeline: video_coords instead of the grid sizes (pixel-space frame/row/column)."""
    kwargs = inputs(seed, t, **extra)
    for name in ("num_frames", "height", "width", "rope_interpolation_scale"):
        kwargs.pop(name)
    grid = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (FRAMES, HEIGHT, WIDTH)), indexing="ij"))
    coords = grid.flatten(1).float() * torch.tensor([8 / 25, 32, 32])[:, None]
    kwargs["video_coords"] = coords.unsqueeze(0).repeat(2, 1, 1)
    return kwargs


def test_caching_off_equals_the_unhooked_forward_over_steps_and_branches(model):
    calls = [
        ("cond_uncond", inputs(1, 1000.0)),
        ("cond_uncond", inputs(2, 800.0, return_dict=False)),
        ("cond_uncond", inputs(3, 500.0)),
        ("cond", inputs(4, 500.0, batch=1, encoder_attention_mask=None)),
        ("uncond", inputs(5, 500.0, batch=1, return_dict=False)),
        (None, inputs(6, 200.0, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_with_per_token_timesteps_and_video_coords(model):
    calls = [
        ("cond_uncond", image_to_video_inputs(1, 900.0)),
        ("cond_uncond", image_to_video_inputs(2, 600.0, return_dict=False)),
        ("uncond", condition_inputs(3, 900.0)),
        ("uncond", condition_inputs(4, 600.0, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_cached_call_returns_postprocess_of_input_plus_cached_residual(model):
    (residual,) = assert_cached_call_is_input_plus_residual(model, inputs(1, 900.0), inputs(2, 800.0))
    assert residual.shape == (2, TOKENS, 16)
    assert_cached_call_is_input_plus_residual(
        model, image_to_video_inputs(1, 900.0), image_to_video_inputs(2, 800.0, return_dict=False), "cond_uncond"
    )


@torch.no_grad()
def test_modulated_input_is_the_first_block_norm1_modulated_by_its_scale_shift_table(model):
    kwargs = image_to_video_inputs(3, 700.0)
    context = get_extractor("LTXVideoTransformer3DModel")(model, **kwargs)
    hidden = model.proj_in(kwargs["hidden_states"])
    assert torch.equal(context.hidden_states, hidden)
    temb, _ = model.time_embed(kwargs["timestep"].flatten(), batch_size=2, hidden_dtype=hidden.dtype)
    temb = temb.view(2, TOKENS, 6, -1)  # one timestep per token here
    block = model.transformer_blocks[0]
    shift_msa = block.scale_shift_table[0] + temb[:, :, 0]
    scale_msa = block.scale_shift_table[1] + temb[:, :, 1]
    expected = block.norm1(hidden) * (1 + scale_msa) + shift_msa
    torch.testing.assert_close(context.modulated_input, expected, rtol=0, atol=1e-6)
    assert context.encoder_hidden_states is None
    assert context.timestep == pytest.approx(700.0)  # the noise level, not the conditioning frame's 0


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(model):
    calls = [
        ("cond_uncond", inputs(1, 900.0, attention_kwargs={"scale": 0.5})),
        ("cond_uncond", inputs(2, 700.0, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


@torch.no_grad()
def test_cached_call_applies_the_output_head_with_its_own_timestep(model):
    """teacli caches the blocks' residual and runs the head (norm_out, scale_shift_table, proj_out) with the
    current timestep; TeaCache4LTX-Video caches after the modulated norm_out, which benchmarks/output_head.py
    measured further from the computed output."""
    from teacli import TeaCacheConfig, apply_teacache

    first, second = inputs(1, 900.0), inputs(2, 800.0)
    with apply_teacache(model, TeaCacheConfig(thresh=1e9, coefficients=(1.0, 0.0))) as handle:
        model(**first)
        cached = model(**second).sample
        assert [str(r.decision) for r in handle.stats.records] == ["forced", "cached"]

    computed = get_extractor("LTXVideoTransformer3DModel")(model, **first)
    (blocks_out,) = computed.run_transformer_blocks()
    hidden = model.proj_in(second["hidden_states"])
    _, embedded = model.time_embed(second["timestep"], batch_size=2, hidden_dtype=hidden.dtype)
    shift, scale = (model.scale_shift_table[None, None] + embedded.view(2, 1, 1, -1)).unbind(dim=2)
    head_input = hidden + (blocks_out - computed.hidden_states)
    expected = model.proj_out(model.norm_out(head_input) * (1 + scale) + shift)
    assert torch.equal(cached, expected)

    from teacli.extractors.ltx import extract_ltx_context_residual_after_head as reference

    reused = reference(model, **second)
    (after_head,) = reference(model, **first).run_transformer_blocks()
    reference_output = reused.postprocess(reused.hidden_states + after_head - computed.hidden_states).sample
    assert not torch.allclose(reference_output, cached, atol=1e-3)  # the two rules really differ


def test_the_reference_head_variant_owes_the_same_two_proofs(model, monkeypatch):
    """extract_ltx_context_residual_after_head (the reference's output head,
    compared in benchmarks/output_head.py) is an extractor too: it owes the same proofs."""
    from teacli.extractors.ltx import extract_ltx_context_residual_after_head

    from teacli.engine.registry import EXTRACTOR_REGISTRY

    monkeypatch.setitem(EXTRACTOR_REGISTRY, "LTXVideoTransformer3DModel", extract_ltx_context_residual_after_head)
    assert_caching_off_matches_unhooked(
        model,
        [
            ("cond_uncond", inputs(1, 1000.0)),
            ("cond", inputs(4, 500.0, batch=1, encoder_attention_mask=None)),
            (None, inputs(6, 200.0, return_dict=False)),
        ],
    )
    assert_cached_call_is_input_plus_residual(model, inputs(1, 900.0), inputs(2, 800.0))
