"""A tiny, randomly initialised FLUX.2 [klein] pipeline built entirely offline.

Every component is the real diffusers/transformers class with a miniature config: Flux2Transformer2DModel
without a guidance embedder (klein), AutoencoderKLFlux2 with its latent batch-norm, a Qwen3ForCausalLM text
encoder whose stacked intermediate hidden states make the prompt embeddings, and the FLUX.2 scheduler config.
It is built as a non-distilled klein (like FLUX.2 [klein] Base), so guidance_scale > 1 runs real CFG with a
"cond" and an "uncond" transformer call per step. The images it makes are noise-like; it exists for tests,
demos and smoke runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from teacli.models.embedded.text import BOS_ID, EOS_ID, PAD_ID, VOCAB, seeded, word_level_tokenizer

__all__ = ["TEXT_ENCODER_OUT_LAYERS", "build_tiny_flux2_klein"]

QWEN_DIM = 16
# The pipeline stacks these hidden states (real klein: 9, 18, 27 of Qwen3's 36 layers); the preset passes them.
TEXT_ENCODER_OUT_LAYERS = (0, 1, 2)
LATENT_CHANNELS = 4
# Renders the user turn only: the word-level vocabulary has no Qwen chat markers to spend on it.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def _transformer() -> Flux2Transformer2DModel:
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,  # latents patchified 2x2, as Flux2KleinPipeline does
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=QWEN_DIM * len(TEXT_ENCODER_OUT_LAYERS),
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),  # must sum to attention_head_dim
        rope_theta=2000,
        guidance_embeds=False,  # klein has no distilled-guidance embedder
    )


def _vae() -> AutoencoderKLFlux2:
    # Four levels give vae_scale_factor 8, as for the real VAE; with the 2x2 patchify one token is 16 pixels.
    vae = AutoencoderKLFlux2(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=LATENT_CHANNELS,
        sample_size=64,
        use_quant_conv=True,
        use_post_quant_conv=True,
    )
    # Non-trivial batch-norm statistics, so the latent (de)normalisation is exercised.
    with torch.no_grad():
        vae.bn.running_mean.uniform_(-0.1, 0.1)
        vae.bn.running_var.uniform_(0.5, 1.5)
    return vae


def _text_encoder() -> Qwen3ForCausalLM:
    config = Qwen3Config(
        vocab_size=len(VOCAB),
        hidden_size=QWEN_DIM,
        intermediate_size=32,
        num_hidden_layers=len(TEXT_ENCODER_OUT_LAYERS) - 1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=512,
        tie_word_embeddings=True,  # as Qwen3-4B
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    return Qwen3ForCausalLM(config)


def _tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = word_level_tokenizer("$A", 512)  # Flux2KleinPipeline pads to max_sequence_length (<= 512)
    tokenizer.chat_template = CHAT_TEMPLATE  # the pipeline calls apply_chat_template
    return tokenizer


def _scheduler() -> FlowMatchEulerDiscreteScheduler:
    # The FLUX.2 scheduler config; the pipeline passes its own sigmas and an empirical mu.
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
        time_shift_type="exponential",
    )


def build_tiny_flux2_klein(directory: Path) -> None:
    """Build the tiny FLUX.2 [klein] pipeline deterministically and save it to `directory`."""
    pipe = Flux2KleinPipeline(
        scheduler=_scheduler(),
        vae=seeded(_vae),
        text_encoder=seeded(_text_encoder),
        tokenizer=_tokenizer(),
        transformer=seeded(_transformer),
        is_distilled=False,
    )
    pipe.save_pretrained(Path(directory), safe_serialization=True)
