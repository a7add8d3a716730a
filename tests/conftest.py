"""Offline, CPU, fp32: every test builds its tiny models locally and never reaches a hub."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from support import make_flux_transformer  # noqa: E402

# `pytest -m quick` (README, Tests): a subset that checks an install in well under a minute. Each entry names a test
# function (every parametrized case of it is in): the installed console script, the CLI's help, the default model's
# picture read back by its checker, the fidelity proofs on one family, preset validation, the front-door claims.
# tests/test_readme.py checks that every entry still names a test.
QUICK_TESTS = (
    "tests/cli/test_cli.py::test_console_script_runs_in_a_subprocess",
    "tests/cli/test_error_wording.py::test_model_help_states_the_real_default",
    "tests/demo/test_teacli_shapes.py::test_default_generate_writes_a_recognisable_picture",
    "tests/extractors/test_extractor_flux.py::test_shared_fidelity_proofs_hold_for_flux",
    "tests/engine/test_decision.py::test_accumulates_until_threshold_then_computes_and_resets",
    "tests/models/test_catalog.py::test_every_builtin_preset_has_an_extractor",
    "tests/models/test_catalog.py::test_invalid_field_names_file_and_field",
    "tests/test_readme.py::test_every_preset_and_extractor_is_in_the_supported_models_table",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).resolve().parent.parent
    for item in items:
        path = Path(str(item.path)).resolve().relative_to(root).as_posix()
        if f"{path}::{item.originalname}" in QUICK_TESTS:
            item.add_marker(pytest.mark.quick)


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
    import teacli.models.catalog
    import teacli.models.resolve

    monkeypatch.setattr(teacli.models.catalog, "DEFAULT_PRESET", "tiny-flux")
    monkeypatch.setattr(teacli.models.resolve, "DEFAULT_PRESET", "tiny-flux")


@pytest.fixture(scope="session")
def tiny_flux_dir(teacli_cache) -> Path:
    from teacli.models.embedded import embedded_model_path

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
    from teacli.models.catalog import builtin_presets

    return builtin_presets()["teacli-shapes"]


@pytest.fixture(scope="module")
def shapes_pipe(shapes_preset):
    """teacli-shapes loaded once per test module (fp32, CPU)."""
    from teacli.models.loading import load_pipeline

    return load_pipeline(shapes_preset, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def tiny_flux_pipe(teacli_cache: str):
    from teacli.models.catalog import builtin_presets
    from teacli.models.loading import load_pipeline

    return load_pipeline(builtin_presets()["tiny-flux"], torch.device("cpu"), torch.float32)


@pytest.fixture
def flux_transformer():
    return make_flux_transformer()


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
