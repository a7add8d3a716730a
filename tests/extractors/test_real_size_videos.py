"""Every video family at its real size, without weights: the transformer built on the meta device from the
checkpoint's published transformer config, one hooked call with inputs of the shapes its pipeline passes at the
model's own resolution and length, and the output's shape checked.

The configs are the values of `transformer/config.json` in the repository named above each one (written here: the
hub cannot be reached from the tests). Latent shapes follow each pipeline: Wan's VAE compresses 4x in time and 8x
in space (Wan 2.2 TI2V's 16x), LTX-Video's 8x and 32x, Mochi's 6x and 8x, Cosmos 1.0's 8x and 8x.
"""

import contextlib
import types

import pytest
import torch
from real_size import hooked_meta_call, meta
from torch.fx.experimental import _config as fx_config

F32 = torch.float32

# Wan-AI/Wan2.1-T2V-14B-Diffusers; Wan2.2-T2V-A14B-Diffusers has the same config for both experts.
WAN_14B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=40,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=13824,
    num_layers=40,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=None,
    added_kv_proj_dim=None,
    rope_max_seq_len=1024,
)
WAN_480P_81 = (16, 21, 60, 104)  # 81 frames of 480x832: (81 - 1) / 4 + 1 latent frames, 8x smaller in space
UMT5_TOKENS = 512  # WanPipeline pads the prompt to max_sequence_length 512


def wan_inputs(channels: int, latent: tuple[int, ...], timestep: torch.Tensor, **extra) -> dict:
    return dict(
        hidden_states=meta(1, channels, *latent[1:]),
        timestep=timestep,
        encoder_hidden_states=meta(1, UMT5_TOKENS, 4096),
        return_dict=False,
        **extra,
    )


def test_wan_2_1_t2v_14b_at_81_frames_of_480p():
    from diffusers import WanTransformer3DModel

    shapes = hooked_meta_call(WanTransformer3DModel, WAN_14B, wan_inputs(16, WAN_480P_81, meta(1, dtype=F32)))
    assert shapes == [(1, *WAN_480P_81)]


def test_wan_2_1_i2v_14b_with_clip_image_embeddings():
    """Wan-AI/Wan2.1-I2V-14B-480P-Diffusers: 20 more input channels (mask and image latents), CLIP ViT-H
    embeddings (257 tokens of 1280) through added K/V projections in every cross-attention."""
    from diffusers import WanTransformer3DModel

    config = {**WAN_14B, "in_channels": 36, "image_dim": 1280, "added_kv_proj_dim": 5120}
    inputs = wan_inputs(36, WAN_480P_81, meta(1, dtype=F32), encoder_hidden_states_image=meta(1, 257, 1280))
    assert hooked_meta_call(WanTransformer3DModel, config, inputs) == [(1, *WAN_480P_81)]


def test_wan_2_2_a14b_experts_at_81_frames_of_720p():
    """Wan2.2-T2V-A14B: a high-noise expert (`transformer`) and a low-noise one (`transformer_2`) with the same
    Wan 14B config, so one call covers both; here at 720p (75,600 tokens). Handing the steps from one expert to the
    other is tested end to end in test_e2e_wan.py."""
    from diffusers import WanTransformer3DModel

    latent = (16, 21, 90, 160)  # 81 frames of 720x1280
    shapes = hooked_meta_call(WanTransformer3DModel, WAN_14B, wan_inputs(16, latent, meta(1, dtype=F32)))
    assert shapes == [(1, *latent)]


def test_wan_2_2_ti2v_5b_with_per_token_timesteps_at_121_frames_of_704p():
    """Wan-AI/Wan2.2-TI2V-5B-Diffusers: 48 latent channels (16x spatial VAE), and with expand_timesteps the
    pipeline passes one timestep per token (batch, tokens)."""
    from diffusers import WanTransformer3DModel

    config = {**WAN_14B, "num_attention_heads": 24, "ffn_dim": 14336, "num_layers": 30}
    config.update(in_channels=48, out_channels=48)
    latent = (48, 31, 44, 80)  # 121 frames of 704x1280
    tokens = 31 * (44 // 2) * (80 // 2)
    shapes = hooked_meta_call(WanTransformer3DModel, config, wan_inputs(48, latent, meta(1, tokens, dtype=F32)))
    assert shapes == [(1, *latent)]


def test_skyreels_v2_df_14b_540p_with_per_frame_timesteps():
    """Skywork/SkyReels-V2-DF-14B-540P-Diffusers: a Wan 14B-shaped transformer; diffusion forcing passes one
    timestep per latent frame. 97 frames of 544x960."""
    from diffusers import SkyReelsV2Transformer3DModel

    config = {key: value for key, value in WAN_14B.items()}
    config.update(pos_embed_seq_len=None, inject_sample_info=False, num_frame_per_block=1)
    latent = (16, 25, 68, 120)
    inputs = wan_inputs(16, latent, meta(1, 25, dtype=F32), enable_diffusion_forcing=True)
    assert hooked_meta_call(SkyReelsV2Transformer3DModel, config, inputs) == [(1, *latent)]


def test_hunyuan_video_at_129_frames_of_544p():
    """hunyuanvideo-community/HunyuanVideo: dual- then single-stream blocks, a guidance embedding (the
    pipeline passes guidance x 1000), a 256-token LLaVA prompt with its mask and CLIP's pooled embedding."""
    from diffusers import HunyuanVideoTransformer3DModel

    config = dict(
        in_channels=16,
        out_channels=16,
        num_attention_heads=24,
        attention_head_dim=128,
        num_layers=20,
        num_single_layers=40,
        num_refiner_layers=2,
        mlp_ratio=4.0,
        patch_size=2,
        patch_size_t=1,
        qk_norm="rms_norm",
        guidance_embeds=True,
        text_embed_dim=4096,
        pooled_projection_dim=768,
        rope_theta=256.0,
        rope_axes_dim=(16, 56, 56),
    )
    latent = (16, 33, 68, 120)  # 129 frames of 544x960: 4x in time, 8x in space
    inputs = dict(
        hidden_states=meta(1, *latent),
        timestep=meta(1, dtype=F32),
        encoder_hidden_states=meta(1, 256, 4096),
        encoder_attention_mask=meta(1, 256, dtype=torch.long),
        pooled_projections=meta(1, 768),
        guidance=meta(1, dtype=F32),
        return_dict=False,
    )
    assert hooked_meta_call(HunyuanVideoTransformer3DModel, config, inputs) == [(1, *latent)]


def test_hunyuan_video_1_5_480p_t2v_at_121_frames():
    """hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v (values also in diffusers'
    scripts/convert_hunyuan_video1_5_to_diffusers.py, "480p_t2v"): 65 input channels (32 latents, 32 of the
    condition, a mask) from a 16x VAE, Qwen2.5-VL prompt (up to 1000 tokens) and byT5 glyph embeddings beside it,
    and SigLIP image embeddings (729 tokens; zeros for text-to-video)."""
    from diffusers import HunyuanVideo15Transformer3DModel

    config = dict(
        in_channels=65,
        out_channels=32,
        num_attention_heads=16,
        attention_head_dim=128,
        num_layers=54,
        num_refiner_layers=2,
        mlp_ratio=4.0,
        patch_size=1,
        patch_size_t=1,
        qk_norm="rms_norm",
        text_embed_dim=3584,
        text_embed_2_dim=1472,
        image_embed_dim=1152,
        rope_theta=256.0,
        rope_axes_dim=(16, 56, 56),
        target_size=640,
        task_type="t2v",
        use_meanflow=False,
    )
    frames, height, width = 31, 30, 53  # 121 frames of 480x848
    inputs = dict(
        hidden_states=meta(1, 65, frames, height, width),
        timestep=meta(1),  # in the latents' dtype, as HunyuanVideo15Pipeline passes it
        encoder_hidden_states=meta(1, 1000, 3584),
        encoder_attention_mask=meta(1, 1000, dtype=torch.long),
        encoder_hidden_states_2=meta(1, 256, 1472),
        encoder_attention_mask_2=meta(1, 256, dtype=torch.long),
        image_embeds=meta(1, 729, 1152),
        return_dict=False,
    )
    # The forward reorders the prompt tokens by their masks (boolean indexing: nonzero), which a meta tensor cannot
    # count; nonzero is told every element is set, so the text is longer than real here, the video is not.
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        shapes = hooked_meta_call(HunyuanVideo15Transformer3DModel, config, inputs)
    assert shapes == [(1, 32, frames, height, width)]


def test_ltx_video_at_161_frames_of_512x704():
    """Lightricks/LTX-Video: packed tokens (batch, frames x height x width, 128) with the latent grid passed beside
    them for the rotary embedding, 128 T5 tokens with their mask."""
    from diffusers import LTXVideoTransformer3DModel

    config = dict(
        in_channels=128,
        out_channels=128,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=32,
        attention_head_dim=64,
        cross_attention_dim=2048,
        num_layers=28,
        activation_fn="gelu-approximate",
        qk_norm="rms_norm_across_heads",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        caption_channels=4096,
        attention_bias=True,
        attention_out_bias=True,
    )
    frames, height, width = 21, 16, 22  # 161 frames of 512x704: 8x in time, 32x in space
    tokens = frames * height * width
    inputs = dict(
        hidden_states=meta(1, tokens, 128),
        encoder_hidden_states=meta(1, 128, 4096),
        timestep=meta(1, dtype=F32),
        encoder_attention_mask=meta(1, 128, dtype=torch.long),
        num_frames=frames,
        height=height,
        width=width,
        rope_interpolation_scale=(8 / 25, 32, 32),  # as LTXPipeline at 25 fps
        return_dict=False,
    )
    assert hooked_meta_call(LTXVideoTransformer3DModel, config, inputs) == [(1, tokens, 128)]


def test_ltx_2_video_and_audio_at_121_frames_of_512x768():
    """Lightricks/LTX-2: a video and an audio stream in every block; Gemma 3 prompt embeddings (1024 tokens of
    3840) for both. Its rope_type is "split", not diffusers' default "interleaved"."""
    from diffusers import LTX2VideoTransformer3DModel

    config = dict(
        activation_fn="gelu-approximate",
        attention_bias=True,
        attention_head_dim=128,
        attention_out_bias=True,
        audio_attention_head_dim=64,
        audio_cross_attention_dim=2048,
        audio_hop_length=160,
        audio_in_channels=128,
        audio_num_attention_heads=32,
        audio_out_channels=128,
        audio_patch_size=1,
        audio_patch_size_t=1,
        audio_pos_embed_max_pos=20,
        audio_sampling_rate=16000,
        audio_scale_factor=4,
        base_height=2048,
        base_width=2048,
        caption_channels=3840,
        causal_offset=1,
        cross_attention_dim=4096,
        cross_attn_timestep_scale_multiplier=1000,
        in_channels=128,
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        num_attention_heads=32,
        num_layers=48,
        out_channels=128,
        patch_size=1,
        patch_size_t=1,
        pos_embed_max_pos=20,
        qk_norm="rms_norm_across_heads",
        rope_double_precision=True,
        rope_theta=10000.0,
        rope_type="split",
        timestep_scale_multiplier=1000,
        vae_scale_factors=(8, 32, 32),
    )
    frames, height, width = 16, 16, 24  # 121 frames of 512x768: 8x in time, 32x in space
    tokens, audio_tokens = frames * height * width, 126  # ~5 s of audio at 25 latent frames a second
    inputs = dict(
        hidden_states=meta(1, tokens, 128),
        audio_hidden_states=meta(1, audio_tokens, 128),
        encoder_hidden_states=meta(1, 1024, 3840),
        audio_encoder_hidden_states=meta(1, 1024, 3840),
        timestep=meta(1, dtype=F32),
        sigma=meta(1, dtype=F32),
        encoder_attention_mask=meta(1, 1024),
        audio_encoder_attention_mask=meta(1, 1024),
        num_frames=frames,
        height=height,
        width=width,
        fps=24.0,
        audio_num_frames=audio_tokens,
        return_dict=False,
    )
    shapes = hooked_meta_call(LTX2VideoTransformer3DModel, config, inputs)
    assert shapes == [(1, tokens, 128), (1, audio_tokens, 128)]


# THUDM/CogVideoX-5b; CogVideoX1.5-5B changes the rows in COGVIDEOX_1_5.
COGVIDEOX_5B = dict(
    num_attention_heads=48,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    flip_sin_to_cos=True,
    freq_shift=0,
    time_embed_dim=512,
    text_embed_dim=4096,
    num_layers=42,
    dropout=0.0,
    attention_bias=True,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=226,
    activation_fn="gelu-approximate",
    timestep_activation_fn="silu",
    norm_elementwise_affine=True,
    norm_eps=1e-5,
    spatial_interpolation_scale=1.875,
    temporal_interpolation_scale=1.0,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=False,
)
COGVIDEOX_1_5 = dict(patch_size_t=2, patch_bias=False, sample_width=300, sample_height=300, sample_frames=81)


@pytest.mark.parametrize(
    "version, config, latent, patches",
    [
        # 49 frames of 480x720: 13 latent frames; 2x2 patches
        ("5b", COGVIDEOX_5B, (13, 16, 60, 90), 13 * 30 * 45),
        # 81 frames of 768x1360: 21 latent frames, padded to 22 by the pipeline for 2-frame patches
        ("1.5", {**COGVIDEOX_5B, **COGVIDEOX_1_5}, (22, 16, 96, 170), 11 * 48 * 85),
    ],
)
def test_cogvideox_with_rotary_embeddings_of_the_real_grid(version, config, latent, patches):
    """The pipeline passes the 3D rotary embedding (cos, sin) of one head's width for every video token."""
    from diffusers import CogVideoXTransformer3DModel

    rotary = (meta(patches, 64, dtype=F32), meta(patches, 64, dtype=F32))
    inputs = dict(
        hidden_states=meta(1, *latent),
        encoder_hidden_states=meta(1, 226, 4096),
        timestep=meta(1, dtype=torch.long),
        image_rotary_emb=rotary,
        return_dict=False,
    )
    assert hooked_meta_call(CogVideoXTransformer3DModel, config, inputs) == [(1, *latent)]


@pytest.fixture
def no_autocast_on_meta(monkeypatch):
    """Mochi's RoPE computes its frequencies under torch.autocast(device type), and autocast has no meta device:
    on meta, the same computation without the autocast (it already casts to float32 inside)."""
    autocast = torch.autocast

    def autocast_unless_meta(device_type, *args, **kwargs):
        return contextlib.nullcontext() if device_type == "meta" else autocast(device_type, *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", autocast_unless_meta)


def test_mochi_at_163_frames_of_480x848(no_autocast_on_meta):
    """genmo/mochi-1-preview: 12 latent channels (6x in time, 8x in space), 256 T5 tokens with their mask (the
    pooled caption is attention-pooled from them)."""
    from diffusers import MochiTransformer3DModel

    config = dict(
        patch_size=2,
        num_attention_heads=24,
        attention_head_dim=128,
        num_layers=48,
        pooled_projection_dim=1536,
        in_channels=12,
        out_channels=None,
        qk_norm="rms_norm",
        text_embed_dim=4096,
        time_embed_dim=256,
        activation_fn="swiglu",
        max_sequence_length=256,
    )
    latent = (12, 28, 60, 106)
    inputs = dict(
        hidden_states=meta(1, *latent),
        encoder_hidden_states=meta(1, 256, 4096),
        timestep=meta(1, dtype=F32),
        encoder_attention_mask=meta(1, 256, dtype=torch.bool),
        return_dict=False,
    )
    # The attention runs the prompt tokens its mask keeps (nonzero), which a meta tensor cannot count; nonzero is
    # told every element is set, which is what this all-ones mask means.
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        shapes = hooked_meta_call(MochiTransformer3DModel, config, inputs)
    assert shapes == [(1, *latent)]


@pytest.fixture
def padding_mask_resize(monkeypatch):
    """Cosmos's forward resizes the padding mask with torchvision (an optional dependency of diffusers); without
    it, the same nearest resize in torch."""
    from diffusers.models.transformers import transformer_cosmos

    if getattr(transformer_cosmos, "transforms", None) is None:
        functional = types.SimpleNamespace(
            resize=lambda tensor, size, interpolation: torch.nn.functional.interpolate(tensor, size, mode=interpolation)
        )
        shim = types.SimpleNamespace(functional=functional, InterpolationMode=types.SimpleNamespace(NEAREST="nearest"))
        monkeypatch.setattr(transformer_cosmos, "transforms", shim, raising=False)


def test_cosmos_1_0_7b_text2world_at_121_frames_of_704x1280(padding_mask_resize):
    """nvidia/Cosmos-1.0-Diffusion-7B-Text2World (values also in diffusers' scripts/convert_cosmos_to_diffusers.py):
    a learnable positional embedding, the pixel-sized padding mask concatenated inside the forward, 512 T5 tokens."""
    from diffusers import CosmosTransformer3DModel

    config = dict(
        in_channels=16,
        out_channels=16,
        num_attention_heads=32,
        attention_head_dim=128,
        num_layers=28,
        mlp_ratio=4.0,
        text_embed_dim=1024,
        adaln_lora_dim=256,
        max_size=(128, 240, 240),
        patch_size=(1, 2, 2),
        rope_scale=(2.0, 1.0, 1.0),
        concat_padding_mask=True,
        extra_pos_embed_type="learnable",
    )
    latent = (16, 16, 88, 160)  # 121 frames of 704x1280: 8x in time and space
    inputs = dict(
        hidden_states=meta(1, *latent),
        timestep=meta(1, dtype=F32),
        encoder_hidden_states=meta(1, 512, 1024),
        fps=30,
        padding_mask=meta(1, 1, 704, 1280),
        return_dict=False,
    )
    assert hooked_meta_call(CosmosTransformer3DModel, config, inputs) == [(1, *latent)]
