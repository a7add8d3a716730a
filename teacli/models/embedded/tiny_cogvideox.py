"""A tiny, randomly initialised CogVideoX text-to-video pipeline built entirely offline.

Every component is the real diffusers/transformers class at a miniature size, shaped as
CogVideoX-5b: CogVideoXTransformer3DModel with 3D RoPE (2x2 patches, two blocks), the causal 3D
AutoencoderKLCogVideoX with 16 latent channels and 4x temporal / 8x spatial compression, a
T5EncoderModel (the shared word-level tokenizer) and the checkpoint's CogVideoXDDIMScheduler
(v-prediction, zero terminal SNR, trailing spacing). CogVideoXPipeline batches the negative and
positive prompts into one call under cache_context("cond_uncond"). 9 frames at 32x32 are 3 latent
frames of 4x4, 12 video tokens; the VAE decodes an odd number of latent frames n into 4(n-1)+1 frames
(even counts give 4n), so 9 frames come back as 9. The videos are noise-like: for tests and smoke runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

from teacli.models.embedded.text import SEED, TEXT_DIM, seeded, t5_text_encoder, t5_tokenizer

__all__ = ["build_tiny_cogvideox", "tiny_transformer", "tiny_vae"]

LATENT_CHANNELS = 16  # as the checkpoints; the pipeline takes the latent channels from transformer.in_channels
TEXT_LENGTH = 16  # the preset's max_sequence_length (226 for the checkpoints)


def tiny_transformer() -> CogVideoXTransformer3DModel:
    return CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,  # 3D RoPE splits it 4 (frames) + 6 (rows) + 6 (columns)
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        time_embed_dim=32,
        text_embed_dim=TEXT_DIM,
        num_layers=2,
        sample_width=4,  # latent size: the pipeline's default 32x32 pixels
        sample_height=4,
        sample_frames=9,  # the default num_frames: 3 latent frames, an odd count as 49 frames (13) are
        patch_size=2,
        max_text_seq_length=TEXT_LENGTH,
        use_rotary_positional_embeddings=True,  # CogVideoX-5b; 2b uses sin-cos positions instead
    )


def tiny_vae() -> AutoencoderKLCogVideoX:
    # Four levels (8x spatial) and the default 4x temporal compression, as the real VAE.
    return AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 16, 16),
        latent_channels=LATENT_CHANNELS,
        layers_per_block=1,
        norm_num_groups=4,
        temporal_compression_ratio=4,
        sample_height=32,
        sample_width=32,
        scaling_factor=0.7,  # CogVideoX-5b's VAE
    )


def scheduler() -> CogVideoXDDIMScheduler:
    # CogVideoX-5b's scheduler config.
    return CogVideoXDDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
        snr_shift_scale=1.0,
    )


def build_tiny_cogvideox(directory: Path) -> None:
    """Build the tiny CogVideoX pipeline deterministically and save it to `directory`."""
    torch.manual_seed(SEED)
    pipe = CogVideoXPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=seeded(t5_text_encoder),
        vae=seeded(tiny_vae),
        transformer=seeded(tiny_transformer),
        scheduler=scheduler(),
    )
    pipe.save_pretrained(Path(directory), safe_serialization=True)
