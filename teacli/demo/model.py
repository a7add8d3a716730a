"""teacli-shapes' components: real diffusers and transformers classes at a size a CPU trains.

Two variants share the pictures, captions and text encoders:

- teacli-shapes (the default): the VAE maps 64x64 RGB to an 8x8 latent (FLUX's scale factor of 8);
  FluxPipeline packs it into 16 tokens of 2x2 patches; 2 double and 4 single blocks.
- teacli-shapes-fine: a VAE with scale factor 4 (a 16x16 latent, 64 tokens) and a deeper
  transformer (3 double and 6 single blocks), to check that cache policies generalise beyond
  the default's few tokens and blocks.

Text goes through CLIP and T5 encoders with teacli's word-level tokenizer. Each variant's weights
together stay far under the 20 MB the package may carry.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

from teacli.models.embedded.text import TEXT_DIM
from teacli.models.embedded.tiny_flux import flux_scheduler

LATENT_CHANNELS = 16  # as FLUX.1's VAE: 8 channels lost the corners of small shapes
MAX_SEQUENCE_LENGTH = 16  # T5 tokens per caption; the longest caption has 12 words and EOS


@dataclass(frozen=True)
class Variant:
    """What differs between the trained models: the VAE's depth (its scale factor) and the transformer's size."""

    name: str
    block_out_channels: tuple[int, ...]  # one down/up block each: the VAE's scale factor is 2 ** (len - 1)
    num_layers: int  # double-stream blocks
    num_single_layers: int
    attention_head_dim: int
    num_attention_heads: int
    axes_dims_rope: tuple[int, int, int]  # sums to attention_head_dim
    latent_channels: int = LATENT_CHANNELS

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


DEFAULT_VARIANT = "teacli-shapes"
VARIANTS: dict[str, Variant] = {
    spec.name: spec
    for spec in (
        Variant(
            name="teacli-shapes",
            block_out_channels=(16, 32, 64, 64),  # 64x64 -> 8x8: 16 image tokens
            num_layers=2,
            num_single_layers=4,
            attention_head_dim=32,
            num_attention_heads=5,
            axes_dims_rope=(8, 12, 12),
        ),
        Variant(
            name="teacli-shapes-fine",
            block_out_channels=(16, 32, 64),  # 64x64 -> 16x16: 64 image tokens
            num_layers=3,
            num_single_layers=6,
            attention_head_dim=32,
            num_attention_heads=4,
            axes_dims_rope=(8, 12, 12),
        ),
    )
}


def variant(name: str = DEFAULT_VARIANT) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


def vae(name: str = DEFAULT_VARIANT) -> AutoencoderKL:
    spec = variant(name)
    blocks = len(spec.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=spec.block_out_channels,
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=spec.latent_channels,
        sample_size=64,
        mid_block_add_attention=False,  # a small latent needs no attention to see the whole picture
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def transformer(name: str = DEFAULT_VARIANT) -> FluxTransformer2DModel:
    spec = variant(name)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=spec.latent_channels * 4,  # 2x2 packed latent patches, as FluxPipeline does
        num_layers=spec.num_layers,
        num_single_layers=spec.num_single_layers,
        attention_head_dim=spec.attention_head_dim,
        num_attention_heads=spec.num_attention_heads,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        guidance_embeds=False,
        axes_dims_rope=spec.axes_dims_rope,  # sums to attention_head_dim
    )


def scheduler() -> FlowMatchEulerDiscreteScheduler:
    return flux_scheduler()  # FLUX.1's: resolution-dependent timestep shifting
