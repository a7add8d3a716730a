"""End to end on the embedded tiny CogVideoX pipeline: the library path, then the CLI.

CogVideoXPipeline stacks the negative and positive prompts into one transformer call per step and
wraps it in cache_context("cond_uncond"), with or without CFG, so every generation has exactly one
state, named "cond_uncond"; a pre-hook on the transformer counts the prompts in each call to show it.
"""

from dataclasses import replace

import pytest
import torch

from teacli import TeaCacheConfig, apply_teacache, remove_teacache
from teacli.engine.decision import Decision
from teacli.generation.caching import teacache_configs
from teacli.models.catalog import builtin_presets
from teacli.models.loading import load_pipeline

STEPS = 8
FRAMES = 9  # 3 latent frames; the VAE gives 4 * (3 - 1) + 1 frames back
SIZE = 32


@pytest.fixture(scope="module")
def pipe(teacli_cache):
    return load_pipeline(builtin_presets()["tiny-cogvideox"], torch.device("cpu"), torch.float32)


@pytest.fixture
def prompts_per_call(pipe):
    sizes = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda _module, args, kwargs: sizes.append(len(kwargs["hidden_states"])), with_kwargs=True
    )
    yield sizes
    handle.remove()


def generate(pipe, guidance: float, **kwargs):
    return pipe(
        "an owl on a tree",
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        height=SIZE,
        width=SIZE,
        num_frames=FRAMES,
        max_sequence_length=16,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).frames


def preset_config() -> TeaCacheConfig:
    # CogVideoX's DDIM scheduler has no step_index for the hook to read, so it is told the step count.
    return replace(teacache_configs(builtin_presets()["tiny-cogvideox"]), num_inference_steps=STEPS)


@pytest.mark.parametrize("guidance, batch", [(6.0, 2), (1.0, 1)])
def test_one_cond_uncond_state_with_and_without_cfg(pipe, prompts_per_call, guidance, batch):
    handle = apply_teacache(pipe, preset_config())
    try:
        frames = generate(pipe, guidance)
    finally:
        remove_teacache(pipe)
    assert prompts_per_call == [batch] * STEPS  # CFG: negative and positive prompt in one call
    records = handle.stats.records
    assert {r.branch for r in records} == {"cond_uncond"}
    assert [r.step for r in records] == list(range(STEPS))
    assert records[0].decision is Decision.FORCED and records[-1].decision is Decision.FORCED
    assert 0 < handle.stats.totals.cached < STEPS - 2
    assert [r.timestep for r in records] == sorted((r.timestep for r in records), reverse=True)
    assert len(frames[0]) == FRAMES and frames[0][0].size == (SIZE, SIZE)


def test_caching_off_gives_the_unhooked_video(pipe):
    expected = generate(pipe, 6.0, output_type="latent")
    handle = apply_teacache(pipe, replace(preset_config(), thresh=0.0))
    try:
        latents = generate(pipe, 6.0, output_type="latent")
    finally:
        remove_teacache(pipe)
    assert handle.stats.totals.cached == 0
    torch.testing.assert_close(latents, expected, rtol=1e-5, atol=1e-5)


def test_cli_writes_the_video_and_reports_one_cond_uncond_state(teacli_cache, monkeypatch, tmp_path):
    from support import generate_and_check, read_video

    stats, counts = generate_and_check(
        monkeypatch,
        tmp_path,
        "tiny-cogvideox",
        "--frames",
        str(FRAMES),
        steps=STEPS,
        thresh=1.0,
        branches={"cond_uncond"},
        suffix=".mp4",
    )
    assert 0 < stats.totals.cached < STEPS - 2
    assert read_video(tmp_path / "tiny-cogvideox.mp4") == (FRAMES, (SIZE, SIZE))
