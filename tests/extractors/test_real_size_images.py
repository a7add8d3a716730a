"""Every image (and audio) family at its real size, without weights: the transformer built from its published
config on the meta device, one hooked call (thresh 0) with inputs of the real shapes, the output shape asserted.

The configs are the values of each model's transformer/config.json on the Hugging Face hub (the repo is named
above each); values that could not be read back offline are marked as such. Images are 1024x1024 unless the
model's native size differs; CFG-batched pipelines pass a batch of 2. See tests/real_size.py for how a
forward runs without data.
"""

from __future__ import annotations

import diffusers
import pytest
import torch
import torch.fx.experimental._config as fx_config
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from real_size import build_on_meta, hooked_meta_call, meta, meta_context_shapes

LATENT = 128  # 1024 px through an 8x VAE
TOKENS = (LATENT // 2) ** 2  # 4096: the 128x128 latent packed into 2x2 patches (FLUX-style)


def flux_ids(text: int, width: int = 3) -> dict:
    return dict(img_ids=meta(TOKENS, width), txt_ids=meta(text, width))


# black-forest-labs/FLUX.1-dev
FLUX1_DEV = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=[16, 56, 56],
)  # fmt: skip

# black-forest-labs/FLUX.2-dev
FLUX2_DEV = dict(
    patch_size=1, in_channels=128, num_layers=8, num_single_layers=48, attention_head_dim=128,
    num_attention_heads=48, joint_attention_dim=15360, timestep_guidance_channels=256, mlp_ratio=3.0,
    axes_dims_rope=[32, 32, 32, 32], rope_theta=2000, eps=1e-6, guidance_embeds=True,
)  # fmt: skip

# Qwen/Qwen-Image
QWEN_IMAGE = dict(
    patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=3584, guidance_embeds=False, axes_dims_rope=[16, 56, 56],
)  # fmt: skip

# stabilityai/stable-diffusion-3.5-large
SD35_LARGE = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64, num_attention_heads=38,
    joint_attention_dim=4096, caption_projection_dim=2432, pooled_projection_dim=2048, out_channels=16,
    pos_embed_max_size=192, qk_norm="rms_norm", dual_attention_layers=[],
)  # fmt: skip

# HiDream-ai/HiDream-I1-Full. llama_layers: which of Llama-3.1-8B's 32 hidden states feeds each of the 48 blocks;
# the published list could not be read offline, and only its length (one per block) shapes the call.
HIDREAM_I1 = dict(
    patch_size=2, in_channels=16, out_channels=16, num_layers=16, num_single_layers=32, attention_head_dim=128,
    num_attention_heads=20, caption_channels=[4096, 4096], text_emb_dim=2048, num_routed_experts=4,
    num_activated_experts=2, axes_dims_rope=[64, 32, 32], max_resolution=[128, 128],
    llama_layers=list(range(32)) + list(range(16, 32)),
)  # fmt: skip

# Alpha-VLLM/Lumina-Image-2.0 (Gemma-2-2B captions: 2304 wide)
LUMINA2 = dict(
    sample_size=128, patch_size=2, in_channels=16, hidden_size=2304, num_layers=26, num_refiner_layers=2,
    num_attention_heads=24, num_kv_heads=8, multiple_of=256, ffn_dim_multiplier=None, norm_eps=1e-5,
    scaling_factor=1.0, axes_dim_rope=[32, 32, 32], axes_lens=[300, 512, 512], cap_feat_dim=2304,
)  # fmt: skip

# THUDM/CogView4-6B
COGVIEW4 = dict(
    patch_size=2, in_channels=16, out_channels=16, num_layers=28, attention_head_dim=128, num_attention_heads=32,
    text_embed_dim=4096, time_embed_dim=512, condition_dim=256, pos_embed_max_size=128, sample_size=128,
    rope_axes_dim=[256, 256],
)  # fmt: skip

# lodestones/Chroma1-HD
CHROMA = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, axes_dims_rope=[16, 56, 56], approximator_num_channels=64,
    approximator_hidden_dim=5120, approximator_layers=5,
)  # fmt: skip

# fal/AuraFlow-v0.3
AURAFLOW = dict(
    sample_size=64, patch_size=2, in_channels=4, num_mmdit_layers=4, num_single_dit_layers=32,
    attention_head_dim=256, num_attention_heads=12, joint_attention_dim=2048, caption_projection_dim=3072,
    out_channels=4, pos_embed_max_size=9216,
)  # fmt: skip

# PixArt-alpha/PixArt-Sigma-XL-2-1024-MS
PIXART_SIGMA = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
    cross_attention_dim=1152, attention_bias=True, sample_size=128, patch_size=2, activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    caption_channels=4096, interpolation_scale=2, use_additional_conditions=False,
)  # fmt: skip

# Efficient-Large-Model/Sana_1600M_1024px_diffusers (DC-AE: 32x down, 32 channels)
SANA_1600M = dict(
    in_channels=32, out_channels=32, num_attention_heads=70, attention_head_dim=32, num_layers=20,
    num_cross_attention_heads=20, cross_attention_head_dim=112, cross_attention_dim=2240, caption_channels=2304,
    mlp_ratio=2.5, sample_size=32, patch_size=1, norm_elementwise_affine=False, norm_eps=1e-6,
)  # fmt: skip

# Tongyi-MAI/Z-Image-Turbo (Qwen3-4B captions: 2560 wide)
Z_IMAGE = dict(
    all_patch_size=[2], all_f_patch_size=[1], in_channels=16, dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30,
    n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560, rope_theta=256.0, t_scale=1000.0,
    axes_dims=[32, 48, 48], axes_lens=[1024, 512, 512],
)  # fmt: skip

# AIDC-AI/Ovis-Image-7B
OVIS_IMAGE = dict(
    patch_size=1, in_channels=64, out_channels=64, num_layers=6, num_single_layers=27, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=2048, axes_dims_rope=[16, 56, 56],
)  # fmt: skip

# meituan-longcat/LongCat-Image
LONGCAT_IMAGE = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=3584, pooled_projection_dim=3584, axes_dims_rope=[16, 56, 56],
)  # fmt: skip

# hunyuanvideo-community/HunyuanImage-2.1-Diffusers (2048x2048 through a 32x VAE: a 64x64 latent, 64 channels;
# byT5 glyph text 1472 wide)
HUNYUAN_IMAGE = dict(
    in_channels=64, out_channels=64, num_attention_heads=28, attention_head_dim=128, num_layers=20,
    num_single_layers=40, num_refiner_layers=2, mlp_ratio=4.0, patch_size=[1, 1], qk_norm="rms_norm",
    guidance_embeds=False, text_embed_dim=3584, text_embed_2_dim=1472, rope_theta=256.0, rope_axes_dim=[64, 64],
)  # fmt: skip

# stabilityai/stable-audio-open-1.0
STABLE_AUDIO = dict(
    sample_size=1024, in_channels=64, num_layers=24, attention_head_dim=64, num_attention_heads=24,
    num_key_value_attention_heads=12, out_channels=64, cross_attention_dim=768, time_proj_dim=256,
    global_states_input_dim=1536, cross_attention_input_dim=768,
)  # fmt: skip


def flux1_inputs():
    return dict(
        hidden_states=meta(1, TOKENS, 64), encoder_hidden_states=meta(1, 512, 4096), pooled_projections=meta(1, 768),
        timestep=meta(1), guidance=meta(1), **flux_ids(512),
    )  # fmt: skip


def flux2_inputs():  # 16x VAE with 32 channels, packed 2x2: 4096 tokens of 128; Mistral text 512 long
    ids = dict(img_ids=meta(1, TOKENS, 4), txt_ids=meta(1, 512, 4))
    return dict(
        hidden_states=meta(1, TOKENS, 128), encoder_hidden_states=meta(1, 512, 15360), timestep=meta(1),
        guidance=meta(1), **ids,
    )  # fmt: skip


def qwen_image_inputs():
    return dict(
        hidden_states=meta(2, TOKENS, 64), encoder_hidden_states=meta(2, 512, 3584),
        encoder_hidden_states_mask=meta(2, 512, dtype=torch.long), timestep=meta(2),
        img_shapes=[[(1, LATENT // 2, LATENT // 2)]] * 2, return_dict=False,
    )  # fmt: skip


def sd3_inputs():  # 77 CLIP tokens + 256 T5 tokens
    return dict(
        hidden_states=meta(2, 16, LATENT, LATENT), encoder_hidden_states=meta(2, 333, 4096),
        pooled_projections=meta(2, 2048), timestep=meta(2),
    )  # fmt: skip


def hidream_inputs():
    return dict(
        hidden_states=meta(2, 16, LATENT, LATENT), timesteps=meta(2), encoder_hidden_states_t5=meta(2, 128, 4096),
        encoder_hidden_states_llama3=meta(32, 2, 128, 4096), pooled_embeds=meta(2, 2048),
    )  # fmt: skip


def lumina2_inputs():
    return dict(
        hidden_states=meta(2, 16, LATENT, LATENT), timestep=meta(2), encoder_hidden_states=meta(2, 256, 2304),
        encoder_attention_mask=meta(2, 256, dtype=torch.bool),
    )  # fmt: skip


def cogview4_inputs():
    sizes = dict(original_size=meta(2, 2), target_size=meta(2, 2), crop_coords=meta(2, 2))
    return dict(
        hidden_states=meta(2, 16, LATENT, LATENT), encoder_hidden_states=meta(2, 224, 4096), timestep=meta(2), **sizes
    )


def chroma_inputs():
    return dict(
        hidden_states=meta(2, TOKENS, 64), encoder_hidden_states=meta(2, 512, 4096), timestep=meta(2), **flux_ids(512)
    )


def auraflow_inputs():  # Pile-T5 text, 256 tokens
    return dict(hidden_states=meta(2, 4, LATENT, LATENT), encoder_hidden_states=meta(2, 256, 2048), timestep=meta(2))


def pixart_inputs():  # T5 text, 300 tokens
    return dict(
        hidden_states=meta(2, 4, LATENT, LATENT), encoder_hidden_states=meta(2, 300, 4096), timestep=meta(2),
        encoder_attention_mask=meta(2, 300, dtype=torch.long),
        added_cond_kwargs=dict(resolution=None, aspect_ratio=None),
    )  # fmt: skip


def sana_inputs():  # Gemma-2-2B text, 300 tokens
    return dict(
        hidden_states=meta(2, 32, 32, 32), encoder_hidden_states=meta(2, 300, 2304), timestep=meta(2),
        encoder_attention_mask=meta(2, 300, dtype=torch.long),
    )  # fmt: skip


def z_image_inputs():
    return dict(x=[meta(16, 1, LATENT, LATENT)] * 2, t=meta(2), cap_feats=[meta(128, 2560), meta(96, 2560)])


def ovis_inputs():
    return dict(
        hidden_states=meta(1, TOKENS, 64), encoder_hidden_states=meta(1, 256, 2048), timestep=meta(1), **flux_ids(256)
    )


def longcat_inputs():
    return dict(
        hidden_states=meta(1, TOKENS, 64), encoder_hidden_states=meta(1, 512, 3584), timestep=meta(1), **flux_ids(512)
    )


def hunyuan_image_inputs():
    return dict(
        hidden_states=meta(2, 64, 64, 64), timestep=meta(2), encoder_hidden_states=meta(2, 1000, 3584),
        encoder_attention_mask=meta(2, 1000, dtype=torch.long), encoder_hidden_states_2=meta(2, 128, 1472),
        encoder_attention_mask_2=meta(2, 128, dtype=torch.long),
    )  # fmt: skip


def stable_audio_inputs():  # 1024 latent frames; T5 128 tokens + seconds start and end
    rope = get_1d_rotary_pos_embed(32, 1025, use_real=True, repeat_interleave_real=False)
    return dict(
        hidden_states=meta(2, 64, 1024), timestep=meta(1), encoder_hidden_states=meta(2, 130, 768),
        global_hidden_states=meta(2, 1, 1536), rotary_embedding=tuple(part.to("meta") for part in rope),
        return_dict=False,
    )  # fmt: skip


CASES = {
    "flux1-dev": ("FluxTransformer2DModel", FLUX1_DEV, flux1_inputs, [(1, TOKENS, 64)]),
    "flux2-dev": ("Flux2Transformer2DModel", FLUX2_DEV, flux2_inputs, [(1, TOKENS, 128)]),
    "qwen-image": ("QwenImageTransformer2DModel", QWEN_IMAGE, qwen_image_inputs, [(2, TOKENS, 64)]),
    "sd3.5-large": ("SD3Transformer2DModel", SD35_LARGE, sd3_inputs, [(2, 16, LATENT, LATENT)]),
    "cogview4": ("CogView4Transformer2DModel", COGVIEW4, cogview4_inputs, [(2, 16, LATENT, LATENT)]),
    "chroma": ("ChromaTransformer2DModel", CHROMA, chroma_inputs, [(2, TOKENS, 64)]),
    "auraflow": ("AuraFlowTransformer2DModel", AURAFLOW, auraflow_inputs, [(2, 4, LATENT, LATENT)]),
    "pixart-sigma": ("PixArtTransformer2DModel", PIXART_SIGMA, pixart_inputs, [(2, 8, LATENT, LATENT)]),
    "sana": ("SanaTransformer2DModel", SANA_1600M, sana_inputs, [(2, 32, 32, 32)]),
    "z-image": ("ZImageTransformer2DModel", Z_IMAGE, z_image_inputs, [(16, 1, LATENT, LATENT)] * 2),
    "ovis-image": ("OvisImageTransformer2DModel", OVIS_IMAGE, ovis_inputs, [(1, TOKENS, 64)]),
    "longcat-image": ("LongCatImageTransformer2DModel", LONGCAT_IMAGE, longcat_inputs, [(1, TOKENS, 64)]),
    "stable-audio": ("StableAudioDiTModel", STABLE_AUDIO, stable_audio_inputs, [(2, 64, 1024)]),
}


@pytest.mark.parametrize("family", list(CASES))
def test_one_hooked_call_at_real_size(family):
    class_name, config, inputs, expected = CASES[family]
    model_class = getattr(diffusers, class_name)
    assert hooked_meta_call(model_class, config, inputs()) == expected


def test_hunyuan_image_at_real_size():
    """Its forward takes the valid text tokens with nonzero() on the masks, which has no meta kernel: torch may
    assume every element nonzero, and here that is true (every text token is valid)."""
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        shapes = hooked_meta_call(diffusers.HunyuanImageTransformer2DModel, HUNYUAN_IMAGE, hunyuan_image_inputs())
    assert shapes == [(2, 64, 64, 64)]


def test_hidream_i1_extractor_at_real_size():
    """The blocks' mixture-of-experts routes tokens by value (bincount of the chosen experts), which no meta
    tensor can do; so only the extractor runs: the patchified image and the modulated input at real size."""
    shapes = meta_context_shapes(diffusers.HiDreamImageTransformer2DModel, HIDREAM_I1, hidream_inputs())
    inner = 20 * 128
    assert shapes["hidden_states"] == (2, TOKENS, inner)
    assert shapes["modulated_input"] == shapes["temb"] == (2, inner)


def test_lumina2_builds_at_real_size():
    """Lumina2 sizes its joint sequence from each caption's length read off the mask (`mask.sum(1).tolist()`
    in its rotary embedder), a value no meta tensor has, and the extractor runs that embedder too; so the check
    narrows to the model built from the published config."""
    model = build_on_meta(diffusers.Lumina2Transformer2DModel, LUMINA2)
    assert len(model.layers) == 26 and model.time_caption_embed.caption_embedder[-1].in_features == 2304
    assert 2.55e9 < sum(p.numel() for p in model.parameters()) < 2.65e9  # Lumina-Image 2.0: 2.6B parameters
