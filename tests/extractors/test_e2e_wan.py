"""End to end on the embedded tiny Wan pipelines: WanPipeline runs cond and uncond as two calls per step,
each in its cache_context with the step index; Wan 2.2 hands the steps from one expert to the other."""

from collections import defaultdict

import numpy as np
import pytest
import torch

from teacli import apply_teacache, remove_teacache
from teacli.engine.decision import Decision, decide
from teacli.generation.caching import teacache_configs
from teacli.models.catalog import builtin_presets
from teacli.models.loading import load_pipeline

PROMPT, NEGATIVE = "an owl on a tree", "blurry"


def load(name: str):
    return load_pipeline(builtin_presets()[name], torch.device("cpu"), torch.float32)


def generate(pipe, name: str, steps: int | None = None, seed: int = 0) -> np.ndarray:
    preset = builtin_presets()[name]
    defaults = preset.defaults
    return pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        num_frames=defaults.frames,
        height=defaults.height,
        width=defaults.width,
        num_inference_steps=steps or defaults.steps,
        guidance_scale=defaults.guidance,
        generator=torch.Generator().manual_seed(seed),
        **preset.call_kwargs,
    ).frames


def replay(handle) -> None:
    """Recompute every decision from the recorded distances with each denoiser's own config."""
    accumulated: dict[tuple, float] = defaultdict(float)
    for record in handle.stats.records:
        config = handle.configs[record.module]
        key = (record.generation, record.module, record.branch)
        verdict = decide(
            distance=record.rel_l1,
            accumulated=accumulated[key],
            coefficients=config.coefficients,
            thresh=config.thresh,
            forced=record.decision is Decision.FORCED,
            x_range=config.rel_l1_range,
        )
        assert verdict.decision is record.decision, f"{key} step {record.step}"
        accumulated[key] = verdict.carried


@pytest.fixture(scope="module")
def wan21(teacli_cache):
    return load("tiny-wan21")


@pytest.fixture(scope="module")
def wan22(teacli_cache):
    return load("tiny-wan22")


def test_the_tiny_pipelines_are_small_eval_mode_and_two_expert(wan21, wan22):
    from teacli.models.embedded import embedded_model_path

    for name in ("tiny-wan21", "tiny-wan22"):
        size = sum(f.stat().st_size for f in embedded_model_path(name).rglob("*.safetensors"))
        assert size < 5 * 2**20, name
    assert not wan21.transformer.training and not wan21.text_encoder.training
    assert wan21.transformer_2 is None and wan21.config.boundary_ratio is None
    assert wan22.config.boundary_ratio == 0.875
    # the experts are separately seeded: different weights
    assert not torch.equal(wan22.transformer.proj_out.weight, wan22.transformer_2.proj_out.weight)


def test_caching_off_gives_the_unhooked_video(wan21):
    reference = generate(wan21, "tiny-wan21", steps=4)
    handle = apply_teacache(wan21, teacache_configs(builtin_presets()["tiny-wan21"], thresh=0.0))
    try:
        video = generate(wan21, "tiny-wan21", steps=4)
    finally:
        remove_teacache(wan21)
    assert video.shape == (1, 5, 32, 32, 3)
    np.testing.assert_allclose(video, reference, rtol=0, atol=1e-5)
    assert handle.stats.totals.cached == 0 and handle.stats.totals.calls == 8


def test_wan21_caches_cond_and_uncond_each_in_its_own_state(wan21):
    preset = builtin_presets()["tiny-wan21"]
    handle = apply_teacache(wan21, teacache_configs(preset))
    try:
        video = generate(wan21, "tiny-wan21")
    finally:
        remove_teacache(wan21)
    assert np.isfinite(video).all()
    steps = preset.defaults.steps
    by_branch = handle.stats.by_branch()
    assert set(by_branch) == {("transformer", "cond"), ("transformer", "uncond")}
    timelines = {}
    for (_, branch), totals in by_branch.items():
        records = [r for r in handle.stats.records if r.branch == branch]
        assert [r.step for r in records] == list(range(steps)), "steps come from WanPipeline's cache_context"
        assert records[0].decision is Decision.FORCED and records[-1].decision is Decision.FORCED
        assert records[0].rel_l1 is None
        assert totals.cached > 0, branch
        timelines[branch] = [r.decision for r in records]
    # The time embedding reads only the timestep: both branches see the same distances and decide alike.
    assert timelines["cond"] == timelines["uncond"]
    replay(handle)


def test_wan22_experts_keep_their_own_states_configs_and_counts(wan22):
    preset = builtin_presets()["tiny-wan22"]
    configs = teacache_configs(preset)
    assert configs["transformer"].modulated_input is None
    assert configs["transformer_2"].modulated_input == "time_projection"
    handle = apply_teacache(wan22, configs)
    try:
        generate(wan22, "tiny-wan22")
        first = list(handle.stats.records)
        generate(wan22, "tiny-wan22", seed=1)  # a second generation starts every expert afresh
    finally:
        remove_teacache(wan22)
    steps = preset.defaults.steps
    by_branch = handle.stats.by_branch()
    assert set(by_branch) == {(m, b) for m in ("transformer", "transformer_2") for b in ("cond", "uncond")}

    assert len(handle.stats.records) == 2 * 2 * steps  # two generations, cond and uncond every step
    for records in (first, handle.stats.records[len(first) :]):
        for branch in ("cond", "uncond"):
            high = [r for r in records if r.module == "transformer" and r.branch == branch]
            low = [r for r in records if r.module == "transformer_2" and r.branch == branch]
            # timesteps >= 875 go to the high-noise expert: 5 of the 10 steps each, in order
            assert [r.step for r in high] == list(range(5)) and [r.step for r in low] == list(range(5, steps))
            assert all(r.timestep >= 875 for r in high) and all(r.timestep < 875 for r in low)
            for expert in (high, low):  # each expert starts fresh: no distance, computed
                assert expert[0].rel_l1 is None and expert[0].decision is Decision.FORCED
            assert low[-1].decision is Decision.FORCED  # the last step of the generation
            assert any(r.decision is Decision.CACHED for r in high), f"high-noise {branch} cached nothing"
            assert any(r.decision is Decision.CACHED for r in low), f"low-noise {branch} cached nothing"
    # Same schedule, timestep-only inputs: the second generation decides exactly as the first.
    second = handle.stats.records[len(first) :]
    assert [(r.module, r.branch, r.step, r.decision) for r in second] == [
        (r.module, r.branch, r.step, r.decision) for r in first
    ]
    replay(handle)


def test_cli_writes_the_wan21_video_with_cond_and_uncond_states(teacli_cache, monkeypatch, tmp_path):
    from support import generate_and_check, read_video

    stats, counts = generate_and_check(
        monkeypatch,
        tmp_path,
        "tiny-wan21",
        "--frames",
        "5",
        "--negative-prompt",
        NEGATIVE,
        steps=8,
        thresh=0.1,
        branches={"cond", "uncond"},
        suffix=".mp4",
    )
    assert counts["cond"][3] > 0 and counts["uncond"][3] > 0
    assert read_video(tmp_path / "tiny-wan21.mp4") == (5, (32, 32))


def test_cli_reports_each_expert_of_wan22_on_its_own_rows(teacli_cache, monkeypatch, tmp_path):
    from support import generate_and_check, read_video

    stats, counts = generate_and_check(
        monkeypatch,
        tmp_path,
        "tiny-wan22",
        "--frames",
        "5",
        "--negative-prompt",
        NEGATIVE,
        steps=10,
        thresh=0.1,
        branches={f"{m}/{b}" for m in ("transformer", "transformer_2") for b in ("cond", "uncond")},
        suffix=".mp4",
    )
    for label in ("transformer/cond", "transformer/uncond", "transformer_2/cond", "transformer_2/uncond"):
        calls, _, forced, cached = counts[label]
        assert calls == 5 and forced >= 1 and cached > 0, label
    assert counts["total"][0] == 2 * 10
    assert read_video(tmp_path / "tiny-wan22.mp4") == (5, (32, 32))
