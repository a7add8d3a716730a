"""Offline, CPU, fp32: every test builds its tiny models locally and never reaches a hub."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def teacli_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One cache directory for the whole session, so tiny-flux is built once."""
    path = str(tmp_path_factory.mktemp("teacli-cache"))
    previous = os.environ.get("TEACLI_CACHE_DIR")
    os.environ["TEACLI_CACHE_DIR"] = path
    yield path
    if previous is None:
        os.environ.pop("TEACLI_CACHE_DIR", None)
    else:
        os.environ["TEACLI_CACHE_DIR"] = previous


@pytest.fixture
def tiny_flux_default(monkeypatch):
    """Make tiny-flux the default model again, for tests about what happens without --model."""
    import teacli.catalog
    import teacli.loading

    monkeypatch.setattr(teacli.catalog, "DEFAULT_PRESET", "tiny-flux")
    monkeypatch.setattr(teacli.loading, "DEFAULT_PRESET", "tiny-flux")


@pytest.fixture(scope="session")
def tiny_flux_dir(teacli_cache) -> Path:
    from teacli.embedded import embedded_model_path

    return embedded_model_path("tiny-flux")


@pytest.fixture(scope="session")
def pickled_flux(tiny_flux_dir, tmp_path_factory) -> Path:
    """tiny-flux saved again with pickle weights (diffusers models as .bin; transformers always writes safetensors)."""
    from diffusers import FluxPipeline

    directory = tmp_path_factory.mktemp("pickled") / "tiny-flux-pickle"
    FluxPipeline.from_pretrained(tiny_flux_dir).save_pretrained(directory, safe_serialization=False)
    weights = {
        p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.suffix in {".bin", ".safetensors"}
    }
    assert {"transformer/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.bin"} <= weights
    assert not any(w.startswith(("transformer/", "vae/")) and w.endswith(".safetensors") for w in weights)
    return directory


@pytest.fixture(scope="module")
def shapes_preset():
    """teacli-shapes, the default model: the trained FLUX-class pipeline teacli ships."""
    from teacli.catalog import builtin_presets

    return builtin_presets()["teacli-shapes"]


@pytest.fixture(scope="module")
def shapes_pipe(shapes_preset):
    """teacli-shapes loaded once per test module (fp32, CPU)."""
    from teacli.loading import load_pipeline

    return load_pipeline(shapes_preset, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def tiny_flux_pipe(teacli_cache: str):
    from teacli.catalog import builtin_presets
    from teacli.loading import load_pipeline

    return load_pipeline(builtin_presets()["tiny-flux"], torch.device("cpu"), torch.float32)


def make_flux_transformer(guidance_embeds: bool = True):
    """A tiny FluxTransformer2DModel (the real class), fp32, eval mode, fixed seed."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    )
    return model.eval()


@pytest.fixture
def flux_transformer():
    return make_flux_transformer()


def flux_inputs(seed: int, timestep: float = 0.7, batch: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, 16, 16, generator=generator),
        encoder_hidden_states=torch.randn(batch, 8, 32, generator=generator),
        pooled_projections=torch.randn(batch, 32, generator=generator),
        timestep=torch.full((batch,), timestep),
        img_ids=torch.randn(16, 3, generator=generator),
        txt_ids=torch.zeros(8, 3),
        guidance=torch.full((batch,), 3.5),
    )


@pytest.fixture(autouse=True)
def no_user_presets(monkeypatch, tmp_path_factory):
    """A developer's own ~/.config/teacli/presets or TEACLI_PRESETS must not change what tests see."""
    monkeypatch.delenv("TEACLI_PRESETS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))


@pytest.fixture
def runner(teacli_cache, monkeypatch, tmp_path):
    """Typer's CLI runner in a fresh working directory, wide enough that Rich keeps report lines whole."""
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "220")
    return CliRunner()
