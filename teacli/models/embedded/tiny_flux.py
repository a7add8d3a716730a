"""A tiny, randomly initialised FLUX.1 pipeline built entirely offline.

Every component is the real diffusers/transformers class with a miniature config, so the
pipeline exercises exactly the code paths (packing, RoPE, guidance embedding, dynamic
shifting, CLIP pooling, T5 encoding, VAE decoding) that TeaCache hooks into on a real
FLUX.1 checkpoint, while weighing a few hundred kilobytes and running in seconds on a CPU.
The images it makes are noise-like; it exists for tests, demos and smoke runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

from teacli.models.embedded.text import (
    EOS_ID,
    TEXT_DIM,
    clip_text_encoder,
    clip_tokenizer,
    seeded,
    t5_text_encoder,
    t5_tokenizer,
)

__all__ = ["EOS_ID", "build_flux_pipeline", "build_tiny_flux", "flux_scheduler"]


def _transformer() -> FluxTransformer2DModel:
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2x2, as FluxPipeline does
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        guidance_embeds=True,  # FLUX.1-dev style distilled guidance
        axes_dims_rope=(4, 6, 6),  # must sum to attention_head_dim
    )


def _vae() -> AutoencoderKL:
    # Four levels give FluxPipeline's vae_scale_factor = 2 ** (4 - 1) = 8, as for the real VAE.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=64,
        scaling_factor=0.3611,  # FLUX.1's VAE values, so latent (de)normalisation is exercised
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    # FLUX.1-dev's scheduler config: resolution-dependent (dynamic) timestep shifting.
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
    )


def build_tiny_flux(directory: Path) -> None:
    """Build the tiny FLUX pipeline deterministically and save it to `directory`."""
    build_flux_pipeline(directory, _transformer)


def build_flux_pipeline(directory: Path, transformer: Callable[[], FluxTransformer2DModel]) -> None:
    """Save a FluxPipeline around `transformer()` with tiny-flux's scheduler, VAE and text encoders.

    Each component is built from a fresh seed, so any transformer leaves the others' weights unchanged.
    """
    pipe = FluxPipeline(
        scheduler=flux_scheduler(),
        vae=seeded(_vae),
        text_encoder=seeded(clip_text_encoder),
        tokenizer=clip_tokenizer(),
        text_encoder_2=seeded(t5_text_encoder),
        tokenizer_2=t5_tokenizer(),
        transformer=seeded(transformer),
    )
    pipe.save_pretrained(Path(directory), safe_serialization=True)
