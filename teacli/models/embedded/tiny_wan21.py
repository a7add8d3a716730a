"""A tiny, randomly initialised Wan 2.1 text-to-video pipeline built entirely offline.

Every component is the real diffusers/transformers class at a miniature size: WanTransformer3DModel
(1x2x2 patches, 3-axis RoPE, two blocks), the causal 3D AutoencoderKLWan with Wan 2.1's 16 latent
channels and 4x temporal / 8x spatial compression, a UMT5EncoderModel and Wan 2.1's scheduler
(UniPC on flow sigmas, shift 3.0). WanPipeline runs cond and uncond as two calls per step, each in
its own cache_context with the step index. 5 frames at 32x32 are 2 latent frames of 4x4, 8 tokens.
The videos it makes are noise-like; it exists for tests, demos and smoke runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from teacli.models.embedded.text import EOS_ID, PAD_ID, SEED, TEXT_DIM, VOCAB, seeded, t5_tokenizer

__all__ = ["build_tiny_wan21", "scheduler", "tiny_text_encoder", "tiny_transformer", "tiny_vae"]

LATENT_CHANNELS = 16  # Wan 2.1's VAE z_dim; the pipeline takes the latent channels from transformer.in_channels


def tiny_transformer() -> WanTransformer3DModel:
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,  # RoPE splits it 4 (frames) + 4 (rows) + 4 (columns)
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,  # as the checkpoints
        rope_max_seq_len=64,
    )
    _smooth_time_embedding(model)
    return model


def _smooth_time_embedding(model: WanTransformer3DModel) -> None:
    """Let the time embedder read only the lowest frequencies of the sinusoidal timestep features.

    A randomly initialised embedder mixes in the fast-turning high frequencies, so its output jumps
    by 60-100% (relative L1) from one step to the next, where a trained one moves smoothly. Reading
    only the 6 lowest of its 16 frequencies brings the step-to-step distances of an 8-step schedule
    to 4-20% (time embedding) and 1-6% (time projection), where the published Wan coefficients
    rescale them to usable values.
    """
    features = model.config.freq_dim
    half = features // 2
    # Timesteps(flip_sin_to_cos=True) lays out [cos, sin], each from the highest frequency to the lowest.
    low = (torch.arange(features) % half) >= half - 6
    with torch.no_grad():
        model.condition_embedder.time_embedder.linear_1.weight.mul_(low.to(torch.float32))


def tiny_vae() -> AutoencoderKLWan:
    # Four levels and two temporal downsamplings, as the real VAE: 8x spatial, 4x temporal compression.
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )


def tiny_text_encoder() -> UMT5EncoderModel:
    config = UMT5Config(
        vocab_size=len(VOCAB),
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",  # as umt5-xxl
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )
    return UMT5EncoderModel(config)


def scheduler(flow_shift: float) -> UniPCMultistepScheduler:
    # The Wan checkpoints' scheduler config: UniPC predicting the flow, on shifted flow sigmas.
    return UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=flow_shift,
        solver_order=2,
        final_sigmas_type="zero",
    )


def build_tiny_wan21(directory: Path) -> None:
    """Build the tiny Wan 2.1 pipeline deterministically and save it to `directory`."""
    torch.manual_seed(SEED)
    pipe = WanPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=seeded(tiny_text_encoder),
        vae=seeded(tiny_vae),
        scheduler=scheduler(flow_shift=3.0),  # Wan 2.1 T2V 480P
        transformer=seeded(tiny_transformer),
    )
    pipe.save_pretrained(Path(directory), safe_serialization=True)
