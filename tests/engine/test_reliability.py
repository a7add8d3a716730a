"""Reliability in one long-lived process: repeated generations are byte-identical, and applying and
removing TeaCache many times leaves no hook, attribute or memory behind.

The figures (time for the generations, object and memory counts) go to the JUnit XML report through
record_property (`pytest --junitxml=...`), so nothing is printed. Generations run on one CPU thread.
"""

from __future__ import annotations

import gc
import io
import time
import tracemalloc

import pytest
import torch

from teacli import apply_teacache, remove_teacache
from teacli.engine.hook import TEACACHE_HOOK
from teacli.generation.caching import teacache_configs
from teacli.generation.runner import GenerationRequest, generate
from teacli.models.catalog import builtin_presets

GENERATIONS = 50
CYCLES = 200


@pytest.fixture
def pipe(tiny_flux_pipe):
    remove_teacache(tiny_flux_pipe)  # the fixture is shared: start, and leave it, unhooked
    # One thread: on a shared 2-core machine two OpenMP threads wait on each other, up to 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_flux_pipe
    torch.set_num_threads(threads)
    remove_teacache(tiny_flux_pipe)


def request(seed: int = 7, steps: int = 8) -> GenerationRequest:
    preset = builtin_presets()["tiny-flux"]
    return GenerationRequest.from_preset(preset, "a red circle on blue", seed=seed, steps=steps, height=32, width=32)


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_fifty_generations_with_one_seed_give_byte_identical_images(pipe, record_property):
    handle = apply_teacache(pipe, teacache_configs(builtin_presets()["tiny-flux"]))  # the preset's threshold
    started = time.perf_counter()
    images = [png(generate(pipe, request()).output) for _ in range(GENERATIONS)]
    seconds = time.perf_counter() - started
    record_property("generations", GENERATIONS)
    record_property("generations_seconds", round(seconds, 3))

    assert len(set(images)) == 1
    timelines = {
        generation: [r.decision for r in handle.stats.records if r.generation == generation]
        for generation in range(GENERATIONS)
    }
    assert len({tuple(timeline) for timeline in timelines.values()}) == 1
    assert handle.stats.totals.cached == GENERATIONS * timelines[0].count("cached") > 0
    # The comparison has teeth: another seed gives other bytes.
    assert png(generate(pipe, request(seed=8)).output) != images[0]


def _footprint() -> dict[str, int]:
    gc.collect()
    objects = gc.get_objects()
    return {
        "objects": len(objects),
        "tensors": sum(1 for o in objects if issubclass(type(o), torch.Tensor)),
        "traced_bytes": tracemalloc.get_traced_memory()[0],
    }


def _attributes(module: torch.nn.Module) -> dict[str, set[str]]:
    return {name: set(vars(sub)) for name, sub in module.named_modules()}


@pytest.fixture
def quiet_teacli_log():
    """Each apply logs "TeaCache enabled" at INFO. After the CLI tests, pytest 9.2 leaves its log-capturing
    handlers on the (non-propagating) teacli logger, and they keep every record: the harness's memory, not ours."""
    import logging

    logger = logging.getLogger("teacli")
    previous = logger.level
    logger.setLevel(logging.WARNING)  # setLevel, not the attribute: the logger caches its level checks
    yield
    logger.setLevel(previous)


def test_apply_and_remove_two_hundred_times_leaves_no_hook_and_no_growth(pipe, record_property, quiet_teacli_log):
    transformer = pipe.transformer
    configs = teacache_configs(builtin_presets()["tiny-flux"])
    small = request(steps=4)
    attributes = _attributes(transformer)

    def cycle(index: int) -> None:
        handle = apply_teacache(pipe, configs)
        if index % 50 == 0:  # a generation between some cycles: the states and residuals must go too
            generate(pipe, small)
            assert handle.stats.totals.cached > 0
        remove_teacache(pipe)
        assert not handle.active

    cycle(0)  # warm-up: first-use caches of the pipeline are not growth
    tracemalloc.start()
    try:
        before = _footprint()
        for index in range(1, 51):
            cycle(index)
        after_50 = _footprint()
        for index in range(51, CYCLES + 1):
            cycle(index)
        after_200 = _footprint()
    finally:
        tracemalloc.stop()
    for label, figures in (("before", before), ("after_50", after_50), ("after_200", after_200)):
        for key, value in figures.items():
            record_property(f"{label}_{key}", value)

    assert _attributes(transformer) == attributes  # no forward, registry or other attribute left anywhere
    assert transformer.forward.__func__ is type(transformer).forward
    assert not any(
        TEACACHE_HOOK in getattr(vars(m).get("_diffusers_hook"), "hooks", {}) for m in pipe.transformer.modules()
    )
    # No linear growth: 150 more cycles (three with a generation) leave the counts where 50 left them.
    # (Counts may drop: garbage other tests in the session left can be freed meanwhile.)
    assert after_200["tensors"] <= after_50["tensors"] <= before["tensors"]
    assert after_200["objects"] - after_50["objects"] <= 20
    # A handle kept alive with its hook is 5 objects and ~0.8 KiB a cycle (120 KiB here); a generation leaves
    # a few hundred bytes in torch's and transformers' own caches, hence the margin.
    assert after_200["traced_bytes"] - after_50["traced_bytes"] < 32 * 1024
