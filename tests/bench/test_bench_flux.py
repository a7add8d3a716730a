"""bench-flux: the FLUX-shaped embedded model sized for benchmarks (offline, CPU).

Its shape is checked on the meta device; the one real build (about 160 MB of fp32, under a second
to build) is shared by the module and only ever runs the transformer on small inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel

from teacli.generation.runner import GenerationRequest, generate
from teacli.models.catalog import builtin_presets
from teacli.models.embedded import EMBEDDED_MODELS, LazyBuilder, embedded_model_path
from teacli.models.embedded.bench_flux import build_bench_flux, transformer_config
from teacli.models.embedded.tiny_flux import build_tiny_flux
from teacli.models.loading import check_extractor, load_pipeline, resolve_preset

PROMPTS = ("a red circle on a blue background", "an owl sitting on a tree at night")


def _safetensors(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*.safetensors"))}


def _relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() / a.abs().mean())


@pytest.fixture(scope="module")
def pipe(teacli_cache: str) -> FluxPipeline:
    return load_pipeline(builtin_presets()["bench-flux"], torch.device("cpu"), torch.float32)


# --- without building anything -------------------------------------------------------------


def test_transformer_shape_on_meta_device() -> None:
    config = transformer_config()
    with torch.device("meta"):
        model = FluxTransformer2DModel(**config)

    assert len(model.transformer_blocks) == 4
    assert len(model.single_transformer_blocks) == 8
    assert model.inner_dim == 384
    assert sum(config["axes_dims_rope"]) == config["attention_head_dim"]
    assert model.config.guidance_embeds
    assert 30e6 <= sum(p.numel() for p in model.parameters()) <= 50e6


def test_preset_points_at_the_registered_builder() -> None:
    preset = builtin_presets()["bench-flux"]
    tiny = builtin_presets()["tiny-flux"]

    assert resolve_preset("bench-flux") is preset
    assert preset.embedded == "bench-flux" and preset.is_test_model
    builder = EMBEDDED_MODELS["bench-flux"]
    assert isinstance(builder, LazyBuilder)
    assert (builder.module, builder.function) == ("teacli.models.embedded.bench_flux", "build_bench_flux")
    assert (preset.pipeline, preset.transformer, preset.extractor) == (
        "FluxPipeline",
        "FluxTransformer2DModel",
        "flux",
    )
    check_extractor(preset)
    d = preset.defaults
    assert (d.steps, d.guidance, d.height, d.width, d.true_cfg) == (28, 3.5, 256, 256, 4.0)
    assert preset.coefficients == tiny.coefficients
    assert preset.coefficients_source.startswith("borrowed from flux-dev")
    assert preset.thresh == 0.25
    assert "benchmark" in preset.description


# --- the real build ------------------------------------------------------------------------


def test_build_is_deterministic_and_shares_tiny_flux_components(pipe: FluxPipeline, tmp_path: Path) -> None:
    cached = embedded_model_path("bench-flux")
    torch.manual_seed(1234)  # a different global RNG state must not matter
    torch.randn(100)
    build_bench_flux(tmp_path / "again")
    build_tiny_flux(tmp_path / "tiny")

    bench, again, tiny = _safetensors(cached), _safetensors(tmp_path / "again"), _safetensors(tmp_path / "tiny")
    assert bench == again
    shared = (
        "text_encoder/model.safetensors",
        "text_encoder_2/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    )
    for name in shared:
        assert bench[name] == tiny[name], name
    transformer = "transformer/diffusion_pytorch_model.safetensors"
    assert bench[transformer] != tiny[transformer]
    assert (pipe.transformer.config.num_layers, pipe.transformer.config.num_single_layers) == (4, 8)


def test_transformer_output_is_finite_and_depends_on_timestep_and_prompt(pipe: FluxPipeline) -> None:
    transformer = pipe.transformer
    side = 8  # 128x128 pixels: 16x16 latents packed 2x2, 64 image tokens; small keeps the test quick
    generator = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn(1, side * side, transformer.config.in_channels, generator=generator)
    image_ids = FluxPipeline._prepare_latent_image_ids(1, side, side, "cpu", torch.float32)

    def forward(prompt: str, timestep: float) -> torch.Tensor:
        embeds, pooled, text_ids = pipe.encode_prompt(prompt, prompt_2=None, max_sequence_length=32)
        with torch.no_grad():
            return transformer(
                hidden_states=latents,
                encoder_hidden_states=embeds,
                pooled_projections=pooled,
                timestep=torch.tensor([timestep]),
                img_ids=image_ids,
                txt_ids=text_ids,
                guidance=torch.tensor([3.5]),
                return_dict=False,
            )[0]

    early, late, other_prompt = forward(PROMPTS[0], 1.0), forward(PROMPTS[0], 0.3), forward(PROMPTS[1], 1.0)
    for output in (early, late, other_prompt):
        assert output.shape == latents.shape
        assert torch.isfinite(output).all()
        assert 0.1 < float(output.std()) < 10.0
    assert _relative_change(early, late) > 0.02
    assert _relative_change(early, other_prompt) > 0.02


def test_generates_a_256x256_image_with_the_preset_defaults(pipe: FluxPipeline) -> None:
    request = GenerationRequest.from_preset(builtin_presets()["bench-flux"], PROMPTS[0], steps=2)
    image = generate(pipe, request).output
    assert image.size == (256, 256)
    assert np.asarray(image, dtype=np.float32).std() > 1.0  # not a flat image
