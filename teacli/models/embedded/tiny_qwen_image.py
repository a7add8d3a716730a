"""A tiny, randomly initialised Qwen-Image pipeline built entirely offline.

Every component is the real diffusers/transformers class at a miniature size: the
QwenImageTransformer2DModel (dual stream, 2x2 patches, 3-axis RoPE), the causal-3D
AutoencoderKLQwenImage with latent mean/std normalisation, a Qwen2.5-VL encoder used text-only
(its vision tower is built too, at the smallest size, as the checkpoint ships one) and the
checkpoint's FlowMatchEulerDiscreteScheduler settings. The tokenizer is the shared word-level
one; QwenImagePipeline wraps each prompt in its chat template and drops the first 34 tokens,
and that template tokenizes to 36 words here, so the prompt always survives the cut.
The images it makes are noise-like; it exists for tests, demos and smoke runs.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from teacli.models.embedded.text import BOS_ID, EOS_ID, PAD_ID, TEXT_DIM, VOCAB, seeded, word_level_tokenizer

__all__ = ["build_tiny_qwen_image"]

Z_DIM = 4  # the checkpoint has 16; the pipeline reads every size from the configs
QWEN_MAX_LENGTH = 32768  # the Qwen2 tokenizer's; the pipeline passes its own max_length anyway


def _transformer() -> QwenImageTransformer2DModel:
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=Z_DIM * 4,  # latents packed 2x2, as QwenImagePipeline does
        out_channels=Z_DIM,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        guidance_embeds=False,  # as Qwen-Image: true CFG, no distilled guidance
        axes_dims_rope=(4, 6, 6),  # must sum to attention_head_dim
    )


def _vae() -> AutoencoderKLQwenImage:
    # Three temporal-downsample flags give vae_scale_factor = 2 ** 3 = 8, as for the real VAE.
    return AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=Z_DIM,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[-0.7571, -0.7089, -0.9113, 0.1075],  # the checkpoint's first channels
        latents_std=[2.8184, 1.4541, 2.3275, 2.6558],
    )


def _text_encoder() -> Qwen2_5_VLForConditionalGeneration:
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(VOCAB),
            hidden_size=TEXT_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=16,
            num_heads=2,
            out_hidden_size=TEXT_DIM,
            fullatt_block_indexes=[0],
        ),
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def _scheduler() -> FlowMatchEulerDiscreteScheduler:
    # Qwen/Qwen-Image's scheduler config: exponential dynamic shifting up to 8192 tokens.
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )


def build_tiny_qwen_image(directory: Path) -> None:
    """Build the tiny Qwen-Image pipeline deterministically and save it to `directory`."""
    pipe = QwenImagePipeline(
        scheduler=_scheduler(),
        vae=seeded(_vae),
        text_encoder=seeded(_text_encoder),
        tokenizer=word_level_tokenizer("$A", QWEN_MAX_LENGTH),  # Qwen2's tokenizer adds no special tokens
        transformer=seeded(_transformer),
    )
    pipe.save_pretrained(Path(directory), safe_serialization=True)
