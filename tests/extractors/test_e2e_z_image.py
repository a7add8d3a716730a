"""End to end through the CLI on the embedded tiny Z-Image pipeline.

ZImagePipeline sets no cache_context and runs CFG as one batched call (prompt and negative
prompt stacked), so with or without CFG there is one transformer call per step, all in the
default branch; a pre-hook on the transformer counts the prompts in each call to show it.
"""

import pytest
from support import generate_and_check

STEPS = 8
# Random tiny weights move the modulated input far more per step than a trained model (rel_l1 ~0.3,
# rescaled to ~0.8), so a threshold of 1.0 caches every other step or so.
THRESH = 1.0


@pytest.fixture
def prompts_per_call(monkeypatch):
    """The batch size of every transformer call the CLI makes."""
    import teacli.models.loading as loading

    sizes = []
    load = loading.load_pipeline

    def load_and_watch(*args, **kwargs):
        pipe = load(*args, **kwargs)

        def count(_module, args, kwargs):
            sizes.append(len(args[0] if args else kwargs["x"]))

        pipe.transformer.register_forward_pre_hook(count, with_kwargs=True)
        return pipe

    monkeypatch.setattr(loading, "load_pipeline", load_and_watch)
    return sizes


def test_turbo_style_run_without_cfg_caches_some_steps(teacli_cache, monkeypatch, tmp_path, prompts_per_call):
    # The preset's guidance 0.0 turns CFG off, as for Z-Image-Turbo.
    stats, counts = generate_and_check(
        monkeypatch, tmp_path, "tiny-z-image", steps=STEPS, thresh=THRESH, branches={"default"}
    )
    assert 0 < stats.totals.cached < STEPS - 2
    assert prompts_per_call == [1] * STEPS


def test_cfg_runs_batched_in_the_default_branch(teacli_cache, monkeypatch, tmp_path, prompts_per_call):
    stats, counts = generate_and_check(
        monkeypatch,
        tmp_path,
        "tiny-z-image",
        "--guidance",
        "4.0",
        "--negative-prompt",
        "blurry dark",
        steps=STEPS,
        thresh=THRESH,
        branches={"default"},
    )
    assert 0 < stats.totals.cached < STEPS - 2
    assert prompts_per_call == [2] * STEPS  # prompt and negative prompt in one call
