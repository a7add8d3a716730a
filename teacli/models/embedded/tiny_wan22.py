"""A tiny, randomly initialised Wan 2.2 A14B-style pipeline with two experts, built entirely offline.

WanPipeline with `transformer` (the high-noise expert) and `transformer_2` (the low-noise expert),
switching at boundary_ratio 0.875 as Wan 2.2 T2V A14B does: timesteps >= 875 go to the first expert.
With flow shift 5.0 a 10-step schedule gives each expert 5 steps, so both can cache within a short run.
The other components are tiny Wan 2.1's (the A14B checkpoints keep Wan 2.1's 16-channel VAE and UMT5);
the experts are seeded apart so their weights differ. The videos it makes are noise-like; it exists
for tests, demos and smoke runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import WanPipeline

from teacli.models.embedded.text import SEED, seeded, t5_tokenizer
from teacli.models.embedded.tiny_wan21 import scheduler, tiny_text_encoder, tiny_transformer, tiny_vae

__all__ = ["BOUNDARY_RATIO", "build_tiny_wan22"]

BOUNDARY_RATIO = 0.875  # Wan 2.2 T2V A14B's


def build_tiny_wan22(directory: Path) -> None:
    """Build the tiny two-expert Wan 2.2 pipeline deterministically and save it to `directory`."""
    high_noise = seeded(tiny_transformer)
    torch.manual_seed(SEED + 1)
    low_noise = tiny_transformer()
    pipe = WanPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=seeded(tiny_text_encoder),
        vae=seeded(tiny_vae),
        scheduler=scheduler(flow_shift=5.0),
        transformer=high_noise,
        transformer_2=low_noise,
        boundary_ratio=BOUNDARY_RATIO,
    )
    pipe.save_pretrained(Path(directory), safe_serialization=True)
