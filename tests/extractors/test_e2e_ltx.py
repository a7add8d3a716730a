"""End to end on the embedded tiny LTX-Video pipeline: from Python, then through the CLI.

LTXPipeline runs CFG as one batched call (negative and positive prompt stacked) inside
cache_context("cond_uncond"), with or without CFG, so there is one transformer call per step and
one branch, "cond_uncond".
"""

import pytest
import torch

from teacli import TeaCacheConfig, apply_teacache, remove_teacache
from teacli.engine.decision import Decision

STEPS = 8
FRAMES, SIZE = 5, 32
# Random tiny weights move the modulated input ~0.09 per step (rescaled ~0.1), far more than a trained
# model; 0.2 caches about every other step.
THRESH = 0.2


@pytest.fixture(scope="module")
def pipe(teacli_cache):
    from teacli.models.catalog import builtin_presets
    from teacli.models.loading import load_pipeline

    return load_pipeline(builtin_presets()["tiny-ltx"], torch.device("cpu"), torch.float32)


def generate(pipe, **kwargs):
    kwargs = (
        dict(
            prompt="an owl on a tree",
            negative_prompt="blurry dark",
            num_frames=FRAMES,
            height=SIZE,
            width=SIZE,
            num_inference_steps=STEPS,
            max_sequence_length=16,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )
        | kwargs
    )
    return pipe(**kwargs).frames


@pytest.fixture
def prompts_per_call(pipe):
    sizes = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda _module, args, kwargs: sizes.append(len(kwargs["hidden_states"])), with_kwargs=True
    )
    yield sizes
    handle.remove()


@pytest.mark.parametrize("guidance, prompts", [(3.0, 2), (1.0, 1)])
def test_python_generation_caches_some_steps_in_the_cond_uncond_branch(pipe, prompts_per_call, guidance, prompts):
    handle = apply_teacache(pipe, TeaCacheConfig(thresh=THRESH, coefficients=(1.0, 0.0)))
    try:
        frames = generate(pipe, guidance_scale=guidance)
    finally:
        remove_teacache(pipe)
    assert frames.shape == (1, FRAMES, 3, SIZE, SIZE)
    assert torch.isfinite(frames).all()
    records = handle.stats.records
    assert {r.branch for r in records} == {"cond_uncond"}
    assert [r.step for r in records] == list(range(STEPS))
    assert records[0].decision is Decision.FORCED and records[-1].decision is Decision.FORCED
    assert 0 < handle.stats.totals.cached < STEPS - 2
    assert [r.timestep for r in records] == sorted((r.timestep for r in records), reverse=True)
    assert prompts_per_call == [prompts] * STEPS  # CFG batched into one call per step


def test_python_generation_with_caching_off_equals_the_plain_pipeline(pipe):
    reference = generate(pipe, num_inference_steps=3)
    handle = apply_teacache(pipe, TeaCacheConfig(thresh=0.0, coefficients=(1.0, 0.0)))
    try:
        frames = generate(pipe, num_inference_steps=3)
    finally:
        remove_teacache(pipe)
    assert handle.stats.totals.cached == 0
    torch.testing.assert_close(frames, reference, rtol=1e-5, atol=1e-5)


def test_cli_writes_the_video_and_reports_one_cond_uncond_state(teacli_cache, monkeypatch, tmp_path):
    from support import generate_and_check, read_video

    stats, counts = generate_and_check(
        monkeypatch,
        tmp_path,
        "tiny-ltx",
        "--frames",
        str(FRAMES),
        "--negative-prompt",
        "blurry dark",
        steps=STEPS,
        thresh=THRESH,
        branches={"cond_uncond"},
        suffix=".mp4",
    )
    assert 0 < stats.totals.cached < STEPS - 2
    assert read_video(tmp_path / "tiny-ltx.mp4") == (FRAMES, (SIZE, SIZE))
