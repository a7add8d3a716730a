"""A tiny, randomly initialised Stable Diffusion 3 pipeline built entirely offline.

Every component is the real diffusers/transformers class with a miniature config: two
CLIPTextModelWithProjection encoders of different widths (their token embeddings are concatenated
and zero-padded to the T5 width, their pooled outputs concatenated, as for CLIP-L + CLIP-G), a T5
encoder, a 16-channel AutoencoderKL, and an SD3Transformer2DModel shaped like SD3.5 Medium's (QK
RMSNorm, a dual-attention first block, a context_pre_only last block). StableDiffusion3Pipeline batches
the uncond and cond halves of classifier-free guidance into one transformer call per step. The images
it makes are noise-like; it exists for tests, demos and smoke runs.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from teacli.models.embedded.text import (
    BOS_ID,
    CLIP_MAX_LENGTH,
    EOS_ID,
    PAD_ID,
    TEXT_DIM,
    VOCAB,
    clip_tokenizer,
    seeded,
    t5_text_encoder,
    t5_tokenizer,
)

__all__ = ["build_tiny_sd3"]

# Two CLIP widths whose sum stays below the T5 width, so the pipeline's zero-padding is exercised.
CLIP_WIDTHS = (8, 16)
POOLED_DIM = sum(CLIP_WIDTHS)


def _clip_with_projection(width: int, activation: str) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=len(VOCAB),
        hidden_size=width,
        intermediate_size=2 * width,
        projection_dim=width,  # as for CLIP-L (768) and CLIP-G (1280)
        num_hidden_layers=2,  # the pipeline reads hidden_states[-2]
        num_attention_heads=2,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act=activation,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    return CLIPTextModelWithProjection(config)


def _transformer() -> SD3Transformer2DModel:
    return SD3Transformer2DModel(
        sample_size=8,  # the pipeline's default size: 8 latents * vae_scale_factor 8 = 64 pixels
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,  # T5 width
        caption_projection_dim=32,  # = inner dim, as joint attention needs
        pooled_projection_dim=POOLED_DIM,
        out_channels=16,
        pos_embed_max_size=16,  # up to 256 x 256 pixels
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )


def _vae() -> AutoencoderKL:
    # Four levels give vae_scale_factor = 2 ** (4 - 1) = 8, as for the real 16-channel SD3 VAE.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=16,
        sample_size=64,
        scaling_factor=1.5305,  # SD3's VAE values, so latent (de)normalisation is exercised
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _scheduler() -> FlowMatchEulerDiscreteScheduler:
    # SD3 / SD3.5's scheduler config: a fixed shift of 3, no dynamic shifting.
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)


def build_tiny_sd3(directory: Path) -> None:
    """Build the tiny SD3 pipeline deterministically and save it to `directory`."""
    pipe = StableDiffusion3Pipeline(
        transformer=seeded(_transformer),
        scheduler=_scheduler(),
        vae=seeded(_vae),
        text_encoder=seeded(lambda: _clip_with_projection(CLIP_WIDTHS[0], "quick_gelu")),  # CLIP-L
        tokenizer=clip_tokenizer(),
        text_encoder_2=seeded(lambda: _clip_with_projection(CLIP_WIDTHS[1], "gelu")),  # CLIP-G
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=seeded(t5_text_encoder),
        tokenizer_3=t5_tokenizer(),
    )
    pipe.save_pretrained(Path(directory), safe_serialization=True)
