"""The teacli-shapes training command: deterministic, atomic, and its output loads as a FluxPipeline."""

import json

import pytest
import torch
from diffusers import FluxPipeline
from safetensors.torch import load_file

from teacli.demo import model
from teacli.demo.train import TrainConfig, main, train

TINY = TrainConfig(vae_steps=2, vae_batch=2, dataset=8, steps=2, batch=4, warmup=1, threads=1)


@pytest.fixture(scope="module")
def trained_twice(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    records = [train(TINY, root / name, log=lambda _line: None) for name in ("a", "b")]
    return root / "a", root / "b", records


def test_same_seed_same_weights(trained_twice):
    first, second, _ = trained_twice
    files = sorted(path.relative_to(first) for path in first.rglob("*.safetensors"))
    assert {str(path.parent) for path in files} == {"transformer", "vae", "text_encoder", "text_encoder_2"}
    for path in files:
        a, b = load_file(first / path), load_file(second / path)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), path


def test_training_leaves_torch_settings_as_they_were(trained_twice):
    assert not torch.are_deterministic_algorithms_enabled()


def test_output_is_a_loadable_pipeline_with_a_training_record(trained_twice):
    first, _, records = trained_twice
    record = json.loads((first / "training.json").read_text())
    assert record["config"]["steps"] == TINY.steps and record["torch"] == torch.__version__
    assert record == json.loads(json.dumps(records[0]))
    pipe = FluxPipeline.from_pretrained(first, dtype=torch.float32)
    # The latent scale and shift come from the encoded pictures, not the class defaults.
    assert pipe.vae.config.scaling_factor != 0.18215 and pipe.vae.config.shift_factor is not None
    assert pipe.transformer.config.in_channels == model.LATENT_CHANNELS * 4
    image = pipe(
        "a red circle on a blue background",
        num_inference_steps=2,
        height=64,
        width=64,
        max_sequence_length=model.MAX_SEQUENCE_LENGTH,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (64, 64)


def test_command_refuses_an_existing_or_homeless_out(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["--out", str(tmp_path / "taken")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "missing" / "model")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
