"""A tiny, randomly initialised LTX-Video pipeline built entirely offline.

Every component is the real diffusers/transformers class at a miniature size: LTXVideoTransformer3DModel
(two blocks, 1x1 patches, as the checkpoint), the causal-encoder AutoencoderKLLTXVideo (2x2 pixel
patches and two spatio-temporal downsamplings: 8x spatial and 4x temporal compression, so 5 frames at
32x32 become 2x4x4 latent tokens), the shared word-level tokenizer and miniature T5 encoder, and the
scheduler settings of Lightricks/LTX-Video (resolution-dependent shift with a terminal sigma of 0.1).
LTXPipeline runs CFG as one batched call in cache_context("cond_uncond").
The videos it makes are noise-like; it exists for tests, demos and smoke runs.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

from teacli.models.embedded.text import TEXT_DIM, seeded, t5_text_encoder, t5_tokenizer

__all__ = ["build_tiny_ltx"]

LATENT_CHANNELS = 8  # the pipeline takes the latent channels from transformer.in_channels


def _transformer() -> LTXVideoTransformer3DModel:
    return LTXVideoTransformer3DModel(
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_attention_heads=2,
        attention_head_dim=16,
        cross_attention_dim=32,  # the blocks cross-attend to the caption projected to the inner dim
        num_layers=2,
        caption_channels=TEXT_DIM,
    )


def _vae() -> AutoencoderKLLTXVideo:
    return AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,  # as LTX-Video 0.9.0
        patch_size=2,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )


def _scheduler() -> FlowMatchEulerDiscreteScheduler:
    # Lightricks/LTX-Video's scheduler config (diffusers' convert_ltx_to_diffusers.py, 0.9.0 and 0.9.1).
    return FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )


def build_tiny_ltx(directory: Path) -> None:
    """Build the tiny LTX-Video pipeline deterministically and save it to `directory`."""
    pipe = LTXPipeline(
        scheduler=_scheduler(),
        vae=seeded(_vae),
        text_encoder=seeded(t5_text_encoder),
        tokenizer=t5_tokenizer(),
        transformer=seeded(_transformer),
    )
    pipe.save_pretrained(Path(directory), safe_serialization=True)
