"""TeaCache beneath offloading: whichever came first, the offload hooks see every call before TeaCache, and
taking TeaCache off leaves them working.

On CPU the weights never change device, so the tests watch the hooks themselves (how often their pre_forward
runs) and, for accelerate's sequential offload, keep the weights on the meta device between calls: a call that
skipped the hook would read meta tensors and fail.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import cpu_offload, cpu_offload_with_hook
from diffusers.hooks import apply_group_offloading
from diffusers.hooks.group_offloading import LazyPrefetchGroupOffloadingHook
from support import COEFFICIENTS, flux_inputs, make_flux_transformer, output_tensors

from teacli import TeaCacheConfig, TeaCacheError, apply_teacache, remove_teacache
from teacli.engine.diffusers_internals import accelerate_wraps_forward, hook_order, hook_registry
from teacli.engine.hook import TEACACHE_HOOK

CPU = torch.device("cpu")
CALLS = [flux_inputs(seed, timestep) for seed, timestep in ((1, 0.9), (2, 0.6), (3, 0.3))]


def make_pixart():
    """PixArt keeps parameters on the transformer itself (scale_shift_table), read by its extractor."""
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=24,
        sample_size=8,
        patch_size=2,
        caption_channels=20,
    ).eval()


def pixart_inputs(seed: int, timestep: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(2, 4, 8, 8, generator=generator),
        encoder_hidden_states=torch.randn(2, 5, 20, generator=generator),
        encoder_attention_mask=torch.ones(2, 5, dtype=torch.long),
        timestep=torch.full((2,), timestep, dtype=torch.long),
        added_cond_kwargs=dict(resolution=None, aspect_ratio=None),
    )


def count_calls(hook) -> list[int]:
    """Count a hook's pre_forward calls: a diffusers registry calls the one it kept at registration (`fn_ref`),
    accelerate looks it up on the hook at every call."""
    target = getattr(hook, "fn_ref", hook)
    counter = [0]
    original = target.pre_forward

    def counted(*args, **kwargs):
        counter[0] += 1
        return original(*args, **kwargs)

    target.pre_forward = counted
    return counter


@torch.no_grad()
def outputs(model, calls) -> list[tuple[torch.Tensor, ...]]:
    return [output_tensors(model(**kwargs)) for kwargs in calls]


def assert_same(got, wanted) -> None:
    for a, b in zip(got, wanted, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)


def hooked(model):
    return apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=COEFFICIENTS))


@pytest.mark.parametrize("teacache_first", [True, False], ids=["teacache-first", "offload-first"])
def test_model_offload_hook_runs_on_every_call_in_either_order(teacache_first):
    model = make_flux_transformer()
    expected = outputs(model, CALLS)
    handle = hooked(model) if teacache_first else None
    _, offload = cpu_offload_with_hook(model, execution_device=CPU)
    calls = count_calls(model._hf_hook)
    handle = handle or hooked(model)
    assert_same(outputs(model, CALLS), expected)
    assert calls[0] == len(CALLS)
    assert handle.stats.totals.calls == len(CALLS)
    remove_teacache(model)
    assert accelerate_wraps_forward(model)  # taking TeaCache off kept accelerate's hook outermost
    assert_same(outputs(model, CALLS), expected)
    assert calls[0] == 2 * len(CALLS)
    offload.remove()


@pytest.mark.parametrize("teacache_first", [True, False], ids=["teacache-first", "offload-first"])
def test_sequential_offload_keeps_weights_on_meta_and_outputs_equal(teacache_first):
    model = make_pixart()
    calls = [pixart_inputs(seed, timestep) for seed, timestep in ((1, 900), (2, 500), (3, 100))]
    expected = outputs(model, calls)
    handle = hooked(model) if teacache_first else None
    cpu_offload(model, execution_device=CPU)  # every weight on meta between calls, moved in by its module's hook
    assert model.scale_shift_table.device.type == "meta"
    handle = handle or hooked(model)
    assert_same(outputs(model, calls), expected)
    assert handle.stats.totals.calls == len(calls)
    remove_teacache(model)
    assert_same(outputs(model, calls), expected)
    assert model.scale_shift_table.device.type == "meta"


@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
@pytest.mark.parametrize("teacache_first", [True, False], ids=["teacache-first", "offload-first"])
def test_group_offload_hook_stays_outside_teacache(offload_type, teacache_first):
    model = make_pixart()
    calls = [pixart_inputs(seed, timestep) for seed, timestep in ((1, 900), (2, 500), (3, 100))]
    expected = outputs(model, calls)
    handle = hooked(model) if teacache_first else None
    blocks = dict(num_blocks_per_group=1) if offload_type == "block_level" else {}
    apply_group_offloading(model, onload_device=CPU, offload_device=CPU, offload_type=offload_type, **blocks)
    handle = handle or hooked(model)
    registry = hook_registry(model)
    assert hook_order(registry) == [TEACACHE_HOOK, "group_offloading"]  # the last runs first
    calls_seen = count_calls(registry.get_hook("group_offloading"))
    assert_same(outputs(model, calls), expected)
    assert calls_seen[0] == len(calls)
    assert handle.stats.totals.calls == len(calls)
    remove_teacache(model)
    assert hook_order(registry) == ["group_offloading"]
    assert_same(outputs(model, calls), expected)
    assert calls_seen[0] == 2 * len(calls)


def test_prefetching_group_offload_is_put_back_without_initializing_twice():
    """With streams, group offloading adds a hook that records the blocks' order on the first call and then takes
    itself off; TeaCache applied before that call must not make it register its layer trackers twice."""
    model = make_flux_transformer()
    expected = outputs(model, CALLS)
    apply_group_offloading(model, onload_device=CPU, offload_device=CPU, num_blocks_per_group=1)
    registry = hook_registry(model)
    registry.register_hook(LazyPrefetchGroupOffloadingHook(), "lazy_prefetch_group_offloading")  # as with streams
    handle = hooked(model)
    assert hook_order(registry) == [TEACACHE_HOOK, "group_offloading", "lazy_prefetch_group_offloading"]
    assert_same(outputs(model, CALLS), expected)
    assert hook_order(registry) == [TEACACHE_HOOK, "group_offloading"]  # it recorded the order and left
    assert handle.stats.totals.calls == len(CALLS) and handle.stats.totals.cached == 0
    first_block = hook_registry(model.transformer_blocks[0]).get_hook("group_offloading")
    assert first_block.group.onload_self is False  # prefetched by the group before it, as diffusers sets up


def test_hooks_added_after_offloading_are_refused_with_the_order_to_use():
    model = make_flux_transformer()
    apply_group_offloading(model, onload_device=CPU, offload_device=CPU, num_blocks_per_group=1)

    from diffusers.hooks.hooks import ModelHook

    hook_registry(model).register_hook(ModelHook(), "someone_else")
    with pytest.raises(TeaCacheError, match="added after context parallelism or group offloading"):
        hooked(model)


def test_the_first_block_comes_in_for_the_extractor_and_goes_back_after_a_cached_call(monkeypatch):
    """Block-level group offloading: the extractor runs the first block's modulation before the block, so the engine
    brings that block's group in for the call, and after a cached call (no block ran to send it back) sends it back.
    On CPU the devices cannot tell, so the group's residency is tracked by wrapping its onload_ and offload_."""
    from memory_variants import track_residency

    import teacli.engine.onload as onload
    from teacli.engine.diffusers_internals import offload_group

    model = make_flux_transformer()
    apply_group_offloading(model, onload_device=CPU, offload_device=CPU, num_blocks_per_group=1)
    group = offload_group(model.transformer_blocks[0])
    resident = track_residency(group)
    monkeypatch.setattr(onload, "group_is_onloaded", lambda g: resident() if g is group else False)
    seen = []  # the first block's residency whenever its modulation runs
    model.transformer_blocks[0].norm1.register_forward_pre_hook(lambda module, args: seen.append(resident()))
    handle = apply_teacache(model, TeaCacheConfig(thresh=1e9, coefficients=COEFFICIENTS))
    with torch.no_grad():
        for kwargs in CALLS:
            model(**kwargs)
            assert not resident()  # back on the offload device after every call, cached or computed
    totals = handle.stats.totals
    assert totals.cached >= 1 and totals.forced >= 1  # both kinds of call happened
    assert seen and all(seen)  # the modulation never ran on an offloaded block
