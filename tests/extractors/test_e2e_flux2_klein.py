"""End to end through the CLI on the embedded tiny FLUX.2 [klein] pipeline (non-distilled, so CFG runs)."""

import json

from support import generate_and_check

from teacli.engine.decision import Decision

# On the tiny model each step's rescaled distance is about 0.18, so 0.25 caches every other step.
THRESH = 0.25


def test_cfg_caches_in_both_branches_with_the_same_decisions(monkeypatch, tmp_path, teacli_cache):
    stats, counts = generate_and_check(
        monkeypatch, tmp_path, "tiny-flux2-klein", steps=6, thresh=THRESH, branches={"cond", "uncond"}
    )
    assert stats.totals.cached > 0
    for branch in ("cond", "uncond"):
        assert counts[branch][3] > 0, f"{branch}: nothing was cached"
    # Both branches see the same latents and timestep, so the same modulated input and the same decisions.
    decisions = {b: [r.decision for r in stats.records if r.branch == b] for b in ("cond", "uncond")}
    assert decisions["cond"] == decisions["uncond"]
    assert Decision.CACHED in decisions["cond"]


def test_without_cfg_only_the_cond_branch_runs(monkeypatch, tmp_path, teacli_cache):
    stats, _ = generate_and_check(
        monkeypatch, tmp_path, "tiny-flux2-klein", "--guidance", "1.0", steps=5, thresh=THRESH, branches={"cond"}
    )
    assert stats.totals.cached > 0


def test_the_build_is_deterministic_small_and_a_non_distilled_klein(tmp_path):
    from teacli.models.embedded.tiny_flux2_klein import build_tiny_flux2_klein

    first, second = tmp_path / "first", tmp_path / "second"
    build_tiny_flux2_klein(first)
    build_tiny_flux2_klein(second)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), f"{name} differs between builds"
    assert sum((first / name).stat().st_size for name in files if name.suffix == ".safetensors") < 5_000_000
    index = json.loads((first / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2KleinPipeline" and index["is_distilled"] is False


def test_the_klein_kv_pipeline_caches_right_after_its_kv_extract_step(teacli_cache):
    """Flux2KleinKVPipeline on the same components: step 0 extracts the reference K/V (always computed),
    later steps run in "cached" KV mode, and the step-0 residual of the noisy tokens is reusable at step 1."""
    import numpy as np
    import torch
    from diffusers import Flux2KleinKVPipeline
    from PIL import Image

    from teacli import TeaCacheConfig, apply_teacache
    from teacli.models.catalog import builtin_presets
    from teacli.models.embedded import embedded_model_path

    preset = builtin_presets()["tiny-flux2-klein"]
    pipe = Flux2KleinKVPipeline.from_pretrained(str(embedded_model_path("tiny-flux2-klein")), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    reference = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))

    def run():
        return pipe(
            prompt="an owl on a tree",
            image=reference,
            num_inference_steps=4,
            height=64,
            width=64,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
            **preset.call_kwargs,
        ).images

    baseline = run()
    with apply_teacache(pipe, TeaCacheConfig(thresh=0.0, coefficients=preset.coefficients)) as handle:
        assert np.array_equal(run(), baseline)
    assert handle.stats.totals.cached == 0
    with apply_teacache(pipe, TeaCacheConfig(thresh=THRESH, coefficients=preset.coefficients)) as handle:
        run()
    decisions = [r.decision for r in handle.stats.records]
    assert decisions[:2] == [Decision.FORCED, Decision.CACHED]
    assert handle.stats.records[1].rel_l1 is not None  # step 0's modulated input excluded the reference tokens
