"""teacli-shapes' components: real diffusers and transformers classes at a size a CPU trains.

The VAE maps 64x64 RGB to an 8x8 latent (FLUX's scale factor of 8); FluxPipeline packs it into
16 tokens of 2x2 patches. Text goes through CLIP and T5 encoders with teacli's word-level
tokenizer. All weights together stay far under the 20 MB the package may carry.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

from teacli.embedded.text import TEXT_DIM
from teacli.embedded.tiny_flux import flux_scheduler

LATENT_CHANNELS = 16  # as FLUX.1's VAE: 8 channels lost the corners of small shapes
MAX_SEQUENCE_LENGTH = 16  # T5 tokens per caption; the longest caption has 12 words and EOS


def vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 64, 64),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=LATENT_CHANNELS,
        sample_size=64,
        mid_block_add_attention=False,  # an 8x8 latent needs no attention to see the whole picture
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def transformer() -> FluxTransformer2DModel:
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,  # 2x2 packed latent patches, as FluxPipeline does
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=32,
        num_attention_heads=5,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        guidance_embeds=False,
        axes_dims_rope=(8, 12, 12),  # sums to attention_head_dim
    )


def scheduler() -> FlowMatchEulerDiscreteScheduler:
    return flux_scheduler()  # FLUX.1's: resolution-dependent timestep shifting
