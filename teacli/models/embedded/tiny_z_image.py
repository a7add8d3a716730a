"""A tiny, randomly initialised Z-Image pipeline built entirely offline.

Every component is the real diffusers/transformers class at a miniature size: the single-stream
ZImageTransformer2DModel (noise and context refiners, 2x2 patches, 3-axis RoPE, sequences padded
to 32 tokens), the FLUX-style AutoencoderKL with 16 latent channels, a Qwen3Model text encoder
(ZImagePipeline reads its second-to-last hidden state) and Z-Image-Turbo's scheduler settings
(static shift 3.0). ZImagePipeline wraps each prompt with tokenizer.apply_chat_template, so the
shared word-level tokenizer gets a minimal chat template that keeps just the prompt.
The images it makes are noise-like; it exists for tests, demos and smoke runs.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

from teacli.models.embedded.text import BOS_ID, EOS_ID, PAD_ID, TEXT_DIM, VOCAB, seeded, word_level_tokenizer

__all__ = ["build_tiny_z_image"]

LATENT_CHANNELS = 16  # as the checkpoint: the pipeline takes the latent channels from transformer.in_channels
QWEN_MAX_LENGTH = 40960  # Qwen3's tokenizer limit; the pipeline passes its own max_length anyway
# Each message's text only; the pipeline's add_generation_prompt and enable_thinking are ignored.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def _transformer() -> ZImageTransformer2DModel:
    return ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=LATENT_CHANNELS,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=TEXT_DIM,
        axes_dims=[4, 6, 6],  # must sum to the head dim, 32 / 2
        axes_lens=[512, 128, 128],  # caption positions; image rows/cols up to 2048 px
    )


def _vae() -> AutoencoderKL:
    # Four levels give vae_scale_factor = 8 as for the real VAE; images are then multiples of 16 px.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=LATENT_CHANNELS,
        sample_size=64,
        scaling_factor=0.3611,  # the checkpoint's (FLUX) VAE values, so latent denormalisation is exercised
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _text_encoder() -> Qwen3Model:
    config = Qwen3Config(
        vocab_size=len(VOCAB),
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,  # the pipeline takes hidden_states[-2]
        num_attention_heads=2,
        num_key_value_heads=1,  # grouped-query attention, as Qwen3
        head_dim=16,
        max_position_embeddings=512,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    return Qwen3Model(config)


def _tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = word_level_tokenizer("$A", QWEN_MAX_LENGTH)  # Qwen adds no BOS/EOS around a prompt
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _scheduler() -> FlowMatchEulerDiscreteScheduler:
    # Z-Image-Turbo's scheduler config: a static shift, no resolution-dependent shifting.
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)


def build_tiny_z_image(directory: Path) -> None:
    """Build the tiny Z-Image pipeline deterministically and save it to `directory`."""
    pipe = ZImagePipeline(
        scheduler=_scheduler(),
        vae=seeded(_vae),
        text_encoder=seeded(_text_encoder),
        tokenizer=_tokenizer(),
        transformer=seeded(_transformer),
    )
    pipe.save_pretrained(Path(directory), safe_serialization=True)
