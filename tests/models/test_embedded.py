"""Tests for the embedded-model cache and the tiny FLUX builder (offline, CPU)."""

from __future__ import annotations

import os

# Set before diffusers/huggingface_hub are imported: any attempt to reach a hub must fail fast.
os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers import DiffusionPipeline, FluxPipeline  # noqa: E402
from PIL import Image  # noqa: E402

from teacli.models.embedded import BUILD_VERSION, EMBEDDED_MODELS, UnknownEmbeddedModel, cache_root, embedded_model_path
from teacli.models.embedded.tiny_flux import EOS_ID, build_tiny_flux  # noqa: E402

PROMPT = "a red circle on a blue background"
MAX_WEIGHT_BYTES = 5 * 1024 * 1024


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("TEACLI_CACHE_DIR", str(directory))
    return directory


@pytest.fixture(scope="module")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-flux")
    build_tiny_flux(directory)
    return directory


@pytest.fixture(scope="module")
def pipe(tiny_flux_dir: Path) -> FluxPipeline:
    return FluxPipeline.from_pretrained(tiny_flux_dir)


def _generate(pipe: FluxPipeline, **kwargs: object) -> Image.Image:
    return pipe(
        PROMPT,
        height=64,
        width=64,
        num_inference_steps=4,
        guidance_scale=3.5,
        max_sequence_length=32,
        generator=torch.Generator("cpu").manual_seed(0),
        **kwargs,
    ).images[0]


def _safetensors(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*.safetensors"))}


# --- cache location -------------------------------------------------------------------------


def test_cache_root_prefers_teacli_cache_dir(cache_dir: Path) -> None:
    assert cache_root() == cache_dir


def test_cache_root_falls_back_to_xdg_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEACLI_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "teacli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "teacli"


# --- embedded_model_path --------------------------------------------------------------------


def test_first_use_builds_a_loadable_pipeline(cache_dir: Path) -> None:
    path = embedded_model_path("tiny-flux")

    assert path == cache_dir / "models" / f"tiny-flux-v{BUILD_VERSION}"
    assert (path / "model_index.json").is_file()
    # Nothing but the finished model is left in the cache: the staging directory was renamed.
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert isinstance(DiffusionPipeline.from_pretrained(path), FluxPipeline)


def test_second_call_reuses_the_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = embedded_model_path("tiny-flux")
    stamp = (path / "model_index.json").stat().st_mtime_ns

    def must_not_run(directory: Path) -> None:
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setitem(EMBEDDED_MODELS, "tiny-flux", must_not_run)
    assert embedded_model_path("tiny-flux") == path
    assert (path / "model_index.json").stat().st_mtime_ns == stamp


def test_unknown_name_lists_known_names(cache_dir: Path) -> None:
    with pytest.raises(UnknownEmbeddedModel, match="tiny-flux") as excinfo:
        embedded_model_path("no-such-model")
    assert isinstance(excinfo.value, KeyError)
    assert isinstance(excinfo.value, ValueError)
    assert "no-such-model" in str(excinfo.value)
    assert not cache_dir.exists()


def test_failing_builder_leaves_nothing_behind(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_fail(directory: Path) -> None:
        (directory / "model_index.json").write_text("{}")
        raise RuntimeError("builder exploded")

    monkeypatch.setitem(EMBEDDED_MODELS, "broken", half_then_fail)
    with pytest.raises(RuntimeError, match="builder exploded"):
        embedded_model_path("broken")
    assert list((cache_dir / "models").iterdir()) == []


def test_losing_a_build_race_keeps_the_winner(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = cache_dir / "models" / f"racy-v{BUILD_VERSION}"

    def build_while_another_process_wins(directory: Path) -> None:
        (directory / "ours").write_text("ours")
        target.mkdir()
        (target / "theirs").write_text("theirs")

    monkeypatch.setitem(EMBEDDED_MODELS, "racy", build_while_another_process_wins)
    assert embedded_model_path("racy") == target
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert [p.name for p in target.parent.iterdir()] == [target.name]


# --- the tiny FLUX pipeline -----------------------------------------------------------------


def test_build_is_deterministic(tmp_path: Path) -> None:
    build_tiny_flux(tmp_path / "a")
    torch.manual_seed(1234)  # a different global RNG state must not matter
    torch.randn(100)
    build_tiny_flux(tmp_path / "b")

    first, second = _safetensors(tmp_path / "a"), _safetensors(tmp_path / "b")
    assert len(first) == 4  # transformer, vae, and both text encoders
    assert first == second


def test_weights_are_small(tiny_flux_dir: Path) -> None:
    assert sum(len(data) for data in _safetensors(tiny_flux_dir).values()) < MAX_WEIGHT_BYTES


def test_loaded_modules_are_in_eval_mode(pipe: FluxPipeline) -> None:
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert not getattr(pipe, name).training, name


def test_tokenizers_end_with_eos_even_when_truncated(pipe: FluxPipeline) -> None:
    long_prompt = " ".join([PROMPT] * 30)
    for tokenizer, length in ((pipe.tokenizer, 77), (pipe.tokenizer_2, 32)):
        ids = tokenizer(long_prompt, padding="max_length", max_length=length, truncation=True).input_ids
        assert len(ids) == length
        assert ids[-1] == EOS_ID
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.tokenizer_2.model_max_length == 512


def test_clip_pools_at_eos(pipe: FluxPipeline) -> None:
    ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    eos_position = int((ids[0] == EOS_ID).nonzero()[0])
    with torch.no_grad():
        out = pipe.text_encoder(ids)
    torch.testing.assert_close(out.pooler_output[0], out.last_hidden_state[0, eos_position])


def test_encode_prompt_shapes(pipe: FluxPipeline) -> None:
    prompt_embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=32)
    assert prompt_embeds.shape == (1, 32, 32)
    assert pooled.shape == (1, 32)
    assert text_ids.shape == (32, 3)


def test_generates_a_64x64_image(pipe: FluxPipeline) -> None:
    image = _generate(pipe)
    assert image.size == (64, 64)
    assert _generate(pipe).tobytes() == image.tobytes()  # seeded generation is reproducible


def test_true_cfg(pipe: FluxPipeline) -> None:
    image = _generate(pipe, negative_prompt="green triangle", true_cfg_scale=2.0)
    assert image.size == (64, 64)
    assert image.tobytes() != _generate(pipe).tobytes()
