"""--num-images: one batch through the pipeline, output i from the noise of seed + i, one cache state per branch."""

from __future__ import annotations

import numpy as np
import pytest

from teacli.generation.runner import GenerationError, GenerationRequest, generate, pipeline_kwargs
from teacli.models.catalog import builtin_presets


def request(**overrides):
    return GenerationRequest.from_preset(builtin_presets()["tiny-flux"], "a red circle", **{"seed": 5, **overrides})


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_batch_matches_one_at_a_time_with_caching_off(tiny_flux_pipe):
    batch = generate(tiny_flux_pipe, request(num_images=3)).outputs
    assert len(batch) == 3
    singles = [generate(tiny_flux_pipe, request(seed=5 + i)).output for i in range(3)]
    for batched, single in zip(batch, singles):
        difference = np.abs(pixels(batched) - pixels(single))
        # Batched matmuls sum in another order: at most one level of 255 on a handful of pixels.
        assert difference.max() <= 1
        assert (difference > 0).mean() < 0.01
    # Different seeds, different pictures: the batch is not one image three times.
    assert np.abs(pixels(batch[0]) - pixels(batch[1])).mean() > 1


def test_batch_of_one_is_todays_single_generator(tiny_flux_pipe):
    kwargs = pipeline_kwargs(tiny_flux_pipe, request())
    assert "num_images_per_prompt" not in kwargs
    assert not isinstance(kwargs["generator"], list)
    batch = pipeline_kwargs(tiny_flux_pipe, request(num_images=2))
    assert batch["num_images_per_prompt"] == 2
    assert [g.initial_seed() for g in batch["generator"]] == [5, 6]


def test_batch_shares_one_state_per_branch(tiny_flux_pipe):
    from teacli.engine.apply import apply_teacache
    from teacli.generation.caching import teacache_configs

    preset = builtin_presets()["tiny-flux"]
    with apply_teacache(tiny_flux_pipe, teacache_configs(preset)) as handle:
        generate(tiny_flux_pipe, request(num_images=2))
    # One record per call for the whole batch, not one per image.
    assert len(handle.stats.records) == preset.defaults.steps
    assert handle.stats.cached > 0


def test_pipeline_without_batches_is_refused(tiny_flux_pipe, monkeypatch):
    import teacli.generation.runner

    monkeypatch.setattr(teacli.generation.runner, "PER_PROMPT_ARGUMENTS", ("num_things_per_prompt",))
    with pytest.raises(GenerationError, match="drop num_images") as error:  # the CLI words it --num-images
        pipeline_kwargs(tiny_flux_pipe, request(num_images=2))
    assert error.value.field == "num_images"
