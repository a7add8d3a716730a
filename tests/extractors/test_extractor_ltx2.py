"""Fidelity of the LTX-2 extractor on tiny LTX2VideoTransformer3DModels (the real diffusers class).

LTX-2 returns a video and an audio prediction, and its blocks carry both streams, so every proof
checks both outputs and both cached residuals. Two shapes: LTX-2.0 (caption projections) and an
LTX-2.3-style model (prompt modulation from sigma, gated attention, perturbed attention for STG,
keyframe embedding, no caption projection).
"""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor

FRAMES, HEIGHT, WIDTH = 2, 2, 3  # latent grid
TOKENS = FRAMES * HEIGHT * WIDTH
AUDIO_TOKENS = 5
CHANNELS, TEXT_DIM, TEXT_TOKENS = 8, 16, 6
VIDEO_DIM, AUDIO_DIM = 32, 16


def make_model(ltx23: bool = False):
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(0)
    extra = {}
    if ltx23:
        extra = dict(
            gated_attn=True,
            cross_attn_mod=True,
            audio_gated_attn=True,
            audio_cross_attn_mod=True,
            use_prompt_embeddings=False,  # the connectors project the prompt per modality
            perturbed_attn=True,
            use_keyframes_abs_pos_embedding=True,
        )
    model = LTX2VideoTransformer3DModel(
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        num_attention_heads=2,
        attention_head_dim=16,
        cross_attention_dim=VIDEO_DIM,
        audio_in_channels=CHANNELS,
        audio_out_channels=CHANNELS,
        audio_num_attention_heads=2,
        audio_attention_head_dim=8,
        audio_cross_attention_dim=AUDIO_DIM,
        num_layers=2,
        caption_channels=TEXT_DIM,
        **extra,
    )
    if ltx23:
        with torch.no_grad():  # zero-initialised upstream; make the keyframe marker visible
            model.keyframes_abs_pos_embedding.normal_()
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def model23():
    return make_model(ltx23=True)


def inputs(seed: int, t: float, batch: int = 2, ltx23: bool = False, **extra) -> dict:
    """As LTX2Pipeline passes them with CFG (negative and positive stacked), t in [0, 1000]."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, TEXT_TOKENS)
    mask[0, 4:] = 0
    video_text, audio_text = (VIDEO_DIM, AUDIO_DIM) if ltx23 else (TEXT_DIM, TEXT_DIM)
    kwargs = dict(
        hidden_states=torch.randn(batch, TOKENS, CHANNELS, generator=generator),
        audio_hidden_states=torch.randn(batch, AUDIO_TOKENS, CHANNELS, generator=generator),
        encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, video_text, generator=generator),
        audio_encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, audio_text, generator=generator),
        timestep=torch.full((batch,), t),
        sigma=torch.full((batch,), t),
        encoder_attention_mask=mask,
        audio_encoder_attention_mask=mask,
        num_frames=FRAMES,
        height=HEIGHT,
        width=WIDTH,
        fps=24.0,
        audio_num_frames=AUDIO_TOKENS,
    )
    kwargs.update(extra)
    return kwargs


def with_coords(model, kwargs: dict) -> dict:
    """As the pipelines do: coordinates computed once by the transformer's RoPE modules."""
    batch = kwargs["hidden_states"].shape[0]
    kwargs["video_coords"] = model.rope.prepare_video_coords(batch, FRAMES, HEIGHT, WIDTH, "cpu", fps=24.0)
    kwargs["audio_coords"] = model.audio_rope.prepare_audio_coords(batch, AUDIO_TOKENS, "cpu")
    return kwargs


def image_to_video(kwargs: dict) -> dict:
    """LTX2ImageToVideoPipeline: video timestep per token (0 on the image frame), audio per sample."""
    conditioning_mask = torch.zeros(kwargs["timestep"].shape[0], TOKENS)
    conditioning_mask[:, : HEIGHT * WIDTH] = 1
    kwargs["audio_timestep"] = kwargs["timestep"]
    kwargs["timestep"] = kwargs["timestep"].unsqueeze(-1) * (1 - conditioning_mask)
    return kwargs


def test_caching_off_equals_the_unhooked_forward_for_video_and_audio(model):
    calls = [
        ("cond_uncond", with_coords(model, inputs(1, 1000.0))),
        ("cond_uncond", with_coords(model, inputs(2, 800.0, return_dict=False))),
        ("uncond_stg", inputs(3, 800.0, batch=1, spatio_temporal_guidance_blocks=[1])),
        ("uncond_modality", inputs(4, 800.0, batch=1, isolate_modalities=True, return_dict=False)),
        ("cond_uncond", image_to_video(inputs(5, 500.0, encoder_attention_mask=None))),
        (None, inputs(6, 200.0, use_cross_timestep=True)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_on_an_ltx23_style_model_with_stg_keyframes_and_self_attention_mask(model23):
    keyframes = torch.zeros(2, TOKENS, 1)
    keyframes[:, : HEIGHT * WIDTH] = 1
    self_mask = torch.ones(2, TOKENS, TOKENS)
    self_mask[:, :, -2:] = 0.5
    calls = [
        ("cond_uncond", inputs(1, 900.0, ltx23=True, use_cross_timestep=True, video_keyframes_mask=keyframes)),
        ("cond_uncond", inputs(2, 700.0, ltx23=True, use_cross_timestep=True, return_dict=False)),
        (
            "uncond_stg",
            inputs(
                3, 700.0, ltx23=True, spatio_temporal_guidance_blocks=[0], perturbation_mask=torch.tensor([0.0, 1.0])
            ),
        ),
        ("uncond_stg", inputs(4, 500.0, ltx23=True, spatio_temporal_guidance_blocks=[1])),
        (
            "cond",
            inputs(5, 500.0, ltx23=True, video_self_attention_mask=self_mask, audio_sigma=torch.full((2,), 400.0)),
        ),
    ]
    assert_caching_off_matches_unhooked(model23, calls)


def test_cached_call_replays_both_residuals(model):
    video, audio = assert_cached_call_is_input_plus_residual(
        model, with_coords(model, inputs(1, 900.0)), with_coords(model, inputs(2, 800.0, return_dict=False))
    )
    assert video.shape == (2, TOKENS, VIDEO_DIM)
    assert audio.shape == (2, AUDIO_TOKENS, AUDIO_DIM)
    assert video.abs().sum() > 0 and audio.abs().sum() > 0


def test_cached_call_replays_both_residuals_on_ltx23(model23):
    assert_cached_call_is_input_plus_residual(
        model23,
        image_to_video(inputs(1, 900.0, ltx23=True, use_cross_timestep=True)),
        image_to_video(inputs(2, 800.0, ltx23=True, use_cross_timestep=True)),
        "cond_uncond",
    )


@torch.no_grad()
def test_modulated_input_is_the_first_block_video_norm1_and_audio_is_offered(model):
    kwargs = image_to_video(inputs(3, 700.0))
    context = get_extractor("LTX2VideoTransformer3DModel")(model, **kwargs)
    video = model.proj_in(kwargs["hidden_states"])
    audio = model.audio_proj_in(kwargs["audio_hidden_states"])
    assert torch.equal(context.hidden_states, video)
    assert torch.equal(context.encoder_hidden_states, audio)
    block = model.transformer_blocks[0]

    temb, _ = model.time_embed(kwargs["timestep"].flatten(), batch_size=2, hidden_dtype=video.dtype)
    temb = temb.view(2, TOKENS, 6, -1)  # one video timestep per token here
    shift, scale = block.scale_shift_table[0] + temb[:, :, 0], block.scale_shift_table[1] + temb[:, :, 1]
    torch.testing.assert_close(context.modulated_input, block.norm1(video) * (1 + scale) + shift, rtol=0, atol=1e-6)

    temb_audio, _ = model.audio_time_embed(kwargs["audio_timestep"], batch_size=2, hidden_dtype=audio.dtype)
    temb_audio = temb_audio.view(2, 1, 6, -1)
    shift = block.audio_scale_shift_table[0] + temb_audio[:, :, 0]
    scale = block.audio_scale_shift_table[1] + temb_audio[:, :, 1]
    expected = block.audio_norm1(audio) * (1 + scale) + shift
    torch.testing.assert_close(context.select_modulated_input("audio"), expected, rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(700.0)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(model):
    calls = [
        ("cond_uncond", inputs(1, 900.0, attention_kwargs={"scale": 0.5})),
        ("cond_uncond", inputs(2, 700.0, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)
