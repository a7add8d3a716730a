"""A FLUX.1-shaped pipeline sized for benchmarks, randomly initialised and built entirely offline.

It is `tiny-flux` with a bigger transformer: the same scheduler, VAE, text encoders and tokenizers
(imported from tiny_flux and text, so they stay byte-identical), around a FluxTransformer2DModel of
about 40M parameters (4 double-stream and 8 single-stream blocks, hidden size 384, 6 heads of 64, FLUX.1's
RoPE layout scaled down, distilled guidance). At 256x256 (256 image tokens plus 32 text tokens) a
28-step generation takes about 4 s on a 2-core CPU, and more than 90% of it is spent inside the
transformer, so what a cache saves in transformer calls shows up in wall time as it does on a real
checkpoint (`benchmarks/transformer_share.py` measures it). The weights are random: the images are noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusers import FluxTransformer2DModel

from teacli.models.embedded.text import TEXT_DIM
from teacli.models.embedded.tiny_flux import build_flux_pipeline

__all__ = ["build_bench_flux", "transformer_config"]


def transformer_config() -> dict[str, Any]:
    """The FluxTransformer2DModel keyword arguments of bench-flux."""
    return {
        "patch_size": 1,
        "in_channels": 16,  # 4 latent channels packed 2x2, as FluxPipeline does
        "num_layers": 4,
        "num_single_layers": 8,
        "attention_head_dim": 64,
        "num_attention_heads": 6,  # hidden size 384
        "joint_attention_dim": TEXT_DIM,
        "pooled_projection_dim": TEXT_DIM,
        "guidance_embeds": True,  # FLUX.1-dev style distilled guidance
        "axes_dims_rope": (16, 24, 24),  # FLUX.1's (16, 56, 56) for heads of 64; must sum to attention_head_dim
    }


def _transformer() -> FluxTransformer2DModel:
    return FluxTransformer2DModel(**transformer_config())


def build_bench_flux(directory: Path) -> None:
    """Build the bench FLUX pipeline deterministically and save it to `directory`."""
    build_flux_pipeline(directory, _transformer)
