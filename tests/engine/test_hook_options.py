"""TeaCacheConfig's cache window, max_cached_in_row and cache_device; the residual memory in the stats;
refusing a diffusers cache hooked on the transformer directly."""

import math

import pytest
import torch
from support import flux_inputs, make_flux_transformer
from toy import IDENTITY, BareToyTransformer, ToyTransformer, drive, modulated_sequence, pattern

from teacli import Decision, TeaCacheConfig, TeaCacheError, apply_teacache, remove_teacache
from teacli.engine.hook import TEACACHE_HOOK

# The toy's streams in drive(): image (2, 3) and text (5,), float32.
TOY_RESIDUAL_BYTES = (2 * 3 + 5) * 4


def config(**kwargs) -> TeaCacheConfig:
    return TeaCacheConfig(coefficients=IDENTITY, **kwargs)


@torch.no_grad()
def test_cache_window_forces_every_step_outside_it():
    model = BareToyTransformer()
    # 0.3 * 10 is 3.0000000000000004 in floating point: step 3 must still be inside.
    handle = apply_teacache(model, config(thresh=10.0, num_inference_steps=10, start=0.3, end=0.8))
    drive(model, [0.01] * 9)
    assert pattern(handle.stats.records) == "FFF.....FF"
    assert handle.config.cache_window(10) == range(3, 8)


@torch.no_grad()
def test_cache_window_reads_the_schedule_length_from_the_pipeline(tiny_flux_pipe):
    handle = apply_teacache(tiny_flux_pipe, config(thresh=100.0, start=0.25, end=0.75))
    try:
        tiny_flux_pipe("a cat", num_inference_steps=8, height=32, width=32, max_sequence_length=16)
    finally:
        remove_teacache(tiny_flux_pipe)
    # Steps 2..5 are the window of 8; step 2 still has a residual from step 1, so it is cached.
    assert pattern(handle.stats.records) == "FF....FF"


def test_cache_window_on_a_bare_transformer_needs_the_step_count():
    with pytest.raises(TeaCacheError, match="set num_inference_steps"):
        apply_teacache(BareToyTransformer(), config(end=0.5))
    apply_teacache(BareToyTransformer(), config(end=1.0))  # the default window needs nothing


@torch.no_grad()
def test_cache_window_fails_at_the_call_when_no_step_count_can_be_found():
    class NoScheduler:
        transformer = BareToyTransformer()

    apply_teacache(NoScheduler, config(start=0.1))
    with pytest.raises(TeaCacheError, match="set num_inference_steps"):
        drive(NoScheduler.transformer, [])  # the first call already


@pytest.mark.parametrize("limit, expected", [(1, "F.F.F.FF"), (2, "F..F..FF"), (3, "F...F..F")])
@torch.no_grad()
def test_max_cached_in_row_computes_the_next_would_be_cached_call(limit, expected):
    model = BareToyTransformer()
    handle = apply_teacache(model, config(thresh=10.0, num_inference_steps=8, max_cached_in_row=limit))
    drive(model, [0.01] * 7)
    assert pattern(handle.stats.records) == expected
    assert model.block_runs == expected.count("F")
    # The forced call starts a fresh accumulation: the next cached call accumulates one distance only.
    records = handle.stats.records
    for before, after in zip(records, records[1:]):
        if before.decision is Decision.FORCED and after.decision is Decision.CACHED:
            assert after.accumulated == pytest.approx(after.rel_l1)


@torch.no_grad()
def test_max_cached_in_row_counts_each_branch_on_its_own():
    model = ToyTransformer()
    handle = apply_teacache(model, config(thresh=10.0, max_cached_in_row=2))
    sequence = modulated_sequence([0.01] * 6)
    for step in range(7):
        # uncond runs only every other step: its run must not be advanced by cond's calls.
        branches = ("cond", "uncond") if step % 2 == 0 else ("cond",)
        for branch in branches:
            with model.cache_context(branch):
                model(torch.ones(2, 3), torch.zeros(5), sequence[step])
    timelines = {b: pattern(r for r in handle.stats.records if r.branch == b) for b in ("cond", "uncond")}
    assert timelines == {"cond": "F..F..F", "uncond": "F..F"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(start=0.5, end=0.5), r"0 <= start < end <= 1 .*got start=0.5, end=0.5"),
        (dict(start=-0.1), "0 <= start < end <= 1"),
        (dict(end=1.5), "0 <= start < end <= 1"),
        (dict(start=math.nan), "start must be a fraction"),
        (dict(end="1"), "end must be a fraction"),
        (dict(start=True), "start must be a fraction"),
        (dict(max_cached_in_row=0), "max_cached_in_row must be an integer >= 1.*use thresh 0"),
        (dict(max_cached_in_row=-2), "max_cached_in_row must be an integer >= 1 or None, got -2$"),
        (dict(max_cached_in_row=1.5), "max_cached_in_row must be an integer >= 1"),
        (dict(cache_device="nowhere"), "cache_device 'nowhere' is not a torch device"),
        (dict(cache_device=3.5), "is not a torch device"),
    ],
)
def test_option_validation(kwargs, message):
    with pytest.raises(TeaCacheError, match=message):
        config(**kwargs)


def test_options_are_normalised():
    made = config(start=0, end=1, cache_device="cpu")
    assert (made.start, made.end, made.cache_device) == (0.0, 1.0, torch.device("cpu"))
    assert not made.has_window and config(end=0.9).has_window


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cache_device_this_machine_lacks_is_refused_at_apply():
    with pytest.raises(TeaCacheError, match="cache_device 'cuda' is not available here"):
        apply_teacache(BareToyTransformer(), config(cache_device="cuda"))


@torch.no_grad()
def test_cpu_cache_device_keeps_residuals_there_and_a_cached_call_is_exactly_stream_plus_residual():
    reference, model = BareToyTransformer(), BareToyTransformer()
    apply_teacache(reference, config(thresh=0.25))
    handle = apply_teacache(model, config(thresh=0.25, cache_device="cpu"))
    expected, got = drive(reference, [0.1] * 3), drive(model, [0.1] * 3)
    assert pattern(handle.stats.records) == "F..C"
    (image0, text0, (out_image0, out_text0)), (image1, text1, (out_image1, out_text1)) = got[:2]
    assert torch.equal(out_image1, image1 + (out_image0 - image0))
    assert torch.equal(out_text1, text1 + (out_text0 - text0))
    for (*_, a), (*_, b) in zip(expected, got):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    state = handle.hooks[0].state_manager.get_state()
    assert all(r.device == torch.device("cpu") for r in state.cached_residuals)
    assert handle.stats.residual_device == "cpu"
    assert handle.stats.peak_residual_bytes == TOY_RESIDUAL_BYTES


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@torch.no_grad()
def test_residuals_kept_in_host_memory_while_the_model_runs_on_cuda():
    inputs = [
        {k: v.cuda() for k, v in flux_inputs(seed, timestep=t).items()} for seed, t in enumerate([1.0, 0.99, 0.98])
    ]
    outputs = {}
    for device in (None, "cpu"):
        model = make_flux_transformer().cuda()
        handle = apply_teacache(model, config(thresh=10.0, cache_device=device))
        outputs[device] = [model(**kwargs).sample for kwargs in inputs]
        assert pattern(handle.stats.records) == "F.."
        residuals = handle.hooks[0].state_manager.get_state().cached_residuals
        assert handle.stats.residual_device == str(residuals[0].device)
        if device == "cpu":
            assert all(r.device.type == "cpu" and r.is_pinned() for r in residuals)
    for a, b in zip(outputs[None], outputs["cpu"]):
        assert torch.equal(a, b)


@torch.no_grad()
def test_peak_residual_bytes_sums_branches_and_denoisers_and_reset_clears_it():
    model = ToyTransformer()
    handle = apply_teacache(model, config(thresh=0.25))
    for branch in ("cond", "uncond"):
        with model.cache_context(branch):
            model(torch.ones(2, 3), torch.zeros(5), torch.ones(4))
    assert handle.stats.peak_residual_bytes == 2 * TOY_RESIDUAL_BYTES
    data = handle.stats.to_dict()
    assert (data["peak_residual_bytes"], data["residual_device"]) == (2 * TOY_RESIDUAL_BYTES, "cpu")
    handle.reset()
    assert (handle.stats.peak_residual_bytes, handle.stats.residual_device) == (0, None)

    class TwoExperts:
        transformer, transformer_2 = BareToyTransformer(), BareToyTransformer()

    experts = apply_teacache(TwoExperts, config(thresh=0.25))
    drive(TwoExperts.transformer, [0.1])
    assert experts.stats.peak_residual_bytes == TOY_RESIDUAL_BYTES
    drive(TwoExperts.transformer_2, [0.1])
    assert experts.stats.peak_residual_bytes == 2 * TOY_RESIDUAL_BYTES


@torch.no_grad()
def test_peak_residual_bytes_on_a_real_transformer_is_its_cached_stream():
    model = make_flux_transformer()
    handle = apply_teacache(model, config(thresh=0.25, num_inference_steps=3))
    model(**flux_inputs(0))
    # FLUX caches one residual: the image tokens after the blocks, (1, 16 tokens, 32 channels) in float32.
    assert handle.stats.peak_residual_bytes == 16 * 32 * 4


def _first_block_cache(module):
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    apply_first_block_cache(module, FirstBlockCacheConfig(threshold=0.1))
    return "FirstBlockCache", "fbc_leader_block_hook", "transformer_blocks.0"


def _mag_cache(module):
    from diffusers.hooks import MagCacheConfig, apply_mag_cache

    apply_mag_cache(module, MagCacheConfig(mag_ratios=[1.0] * 4, num_inference_steps=4))
    return "MagCache", "mag_cache_leader_block_hook", "transformer_blocks.0"


def _taylorseer(module):
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

    apply_taylorseer_cache(module, TaylorSeerCacheConfig())
    return "TaylorSeerCache", "taylorseer_cache", "transformer_blocks.0.attn"


def _pyramid_attention_broadcast(module):
    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

    pab = PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2, current_timestep_callback=lambda: 500)
    apply_pyramid_attention_broadcast(module, pab)
    return "PyramidAttentionBroadcast", "pyramid_attention_broadcast", "transformer_blocks.0.attn"


@pytest.mark.parametrize("apply_cache", [_first_block_cache, _mag_cache, _taylorseer, _pyramid_attention_broadcast])
def test_a_diffusers_cache_applied_directly_is_refused(apply_cache):
    from diffusers.hooks import HookRegistry

    model = make_flux_transformer()
    cache, hook_name, where = apply_cache(model)
    assert not model.is_cache_enabled  # not through enable_cache: only the hooks tell
    message = f"transformer already has {cache} enabled \\(diffusers hook '{hook_name}' on {where}\\);.*do not stack"
    with pytest.raises(TeaCacheError, match=message):
        apply_teacache(model, config())
    assert not any(TEACACHE_HOOK in getattr(vars(m).get("_diffusers_hook"), "hooks", {}) for m in model.modules())
    registry = HookRegistry.check_if_exists_or_initialize(model)
    for _, submodule in model.named_modules():
        for name in list(getattr(vars(submodule).get("_diffusers_hook"), "hooks", {})):
            registry.remove_hook(name, recurse=True)
    apply_teacache(model, config())  # fine once it is gone


def test_a_diffusers_cache_under_another_hook_name_is_found_by_its_class():
    from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache

    model = make_flux_transformer()
    apply_first_block_cache(model, FirstBlockCacheConfig(threshold=0.1))
    registry = HookRegistry.check_if_exists_or_initialize(model.transformer_blocks[0])
    hook = registry.get_hook("fbc_leader_block_hook")
    registry.remove_hook("fbc_leader_block_hook", recurse=False)
    registry.register_hook(hook, "renamed")
    with pytest.raises(TeaCacheError, match="FirstBlockCache enabled \\(diffusers hook 'renamed'"):
        apply_teacache(model, config())


def test_remove_drops_the_registry_it_made_and_keeps_one_that_was_there():
    model = BareToyTransformer()
    apply_teacache(model, config())
    remove_teacache(model)
    assert "_diffusers_hook" not in vars(model) and "forward" not in vars(model)

    model = ToyTransformer()
    with model.cache_context("cond"):  # makes the registry before TeaCache comes
        pass
    registry = model._diffusers_hook
    apply_teacache(model, config())
    remove_teacache(model)
    assert model._diffusers_hook is registry and not registry.hooks
