"""Every private diffusers attribute or API teacli touches, in one place.

teacli hooks diffusers models through the public `HookRegistry`/`ModelHook`, but some things diffusers only keeps
in private attributes: where a module's hook registry lives and in which order its hooks run, a state manager's
current context, a CacheMixin model's cache config, the context-parallel mesh, the names its own caches and
context-parallel hooks register under. Each is read here through a small named function, with the diffusers
behaviour it relies on (checked against diffusers 0.36-0.42); a diffusers upgrade means re-reading this file.

Two model-specific private methods stay in their extractor, which mirrors that one model's forward anyway
(ZImageTransformer2DModel._prepare_sequence / _build_unified_sequence, QwenImageTransformerBlock._modulate).
accelerate's offload hook attribute is here too, for the same reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook, StateManager

# ---------------------------------------------------------------------------------------------------------
# hook registries (diffusers/hooks/hooks.py)

# HookRegistry.check_if_exists_or_initialize stores the registry on the module under this attribute.
REGISTRY_ATTRIBUTE = "_diffusers_hook"
# CacheMixin.enable_cache stores the config it was given under this attribute (None after disable_cache).
CACHE_CONFIG_ATTRIBUTE = "_cache_config"


class StatefulModelHook(ModelHook):
    """A ModelHook whose state diffusers resets: `reset_stateful_hooks` (called by pipelines at the end of a run,
    and by `cache_context`'s bookkeeping) only visits hooks whose private `_is_stateful` is True."""

    _is_stateful = True


def hook_registry(module: torch.nn.Module) -> HookRegistry | None:
    """The module's HookRegistry, if one was made for it (also through a wrapper that forwards attributes)."""
    return getattr(module, REGISTRY_ATTRIBUTE, None)


def own_hook_registry(module: torch.nn.Module) -> HookRegistry | None:
    """The HookRegistry stored on this very module (never one reached through attribute forwarding)."""
    return vars(module).get(REGISTRY_ATTRIBUTE)


def has_hook_registry(module: torch.nn.Module) -> bool:
    return hasattr(module, REGISTRY_ATTRIBUTE)


def drop_hook_registry(module: torch.nn.Module) -> None:
    """Take an (empty) registry off its module: it references the module, a cycle left behind otherwise."""
    vars(module).pop(REGISTRY_ATTRIBUTE, None)


def hook_order(registry: HookRegistry) -> list[str]:
    """The registry's hook names in registration order; the last registered runs first (outermost)."""
    return registry._hook_order


def restore_class_forward(module: torch.nn.Module) -> None:
    """Drop the instance `forward` a registry leaves behind: registering a hook binds the original forward on the
    instance, and removing the last hook does not take it off, so the class's forward would not come back."""
    vars(module).pop("forward", None)


# ---------------------------------------------------------------------------------------------------------
# state managers (diffusers/hooks/hooks.py StateManager; cache_context sets `_context` on them)


def current_context(manager: StateManager) -> Any:
    """The active cache_context of a state manager (an object with `.name`), or None outside one."""
    return manager._context


def context_states(manager: StateManager) -> dict[str, Any]:
    """The per-context states a state manager keeps, by context name (mutable: the manager's own dict)."""
    return manager._state_cache


# ---------------------------------------------------------------------------------------------------------
# models (diffusers/models/modeling_utils.py ModelMixin, cache_utils.py CacheMixin)


def cache_config(module: torch.nn.Module) -> Any:
    """The config a CacheMixin model's enable_cache was given (None when none is enabled)."""
    return getattr(module, CACHE_CONFIG_ATTRIBUTE, None)


def repeated_block_names(model: torch.nn.Module) -> set[str]:
    """The block class names a model declares for regional compilation (`compile_repeated_blocks`)."""
    return set(getattr(type(model), "_repeated_blocks", None) or ())


def run_checkpointed(module: torch.nn.Module, block: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `block` through the model's gradient checkpointing function (set by enable_gradient_checkpointing), as
    the model's own forward does when `torch.is_grad_enabled() and module.gradient_checkpointing`."""
    return module._gradient_checkpointing_func(block, *args, **kwargs)


def has_offload_hook(module: torch.nn.Module) -> bool:
    """Whether accelerate's offload hook (enable_model_cpu_offload / enable_sequential_cpu_offload) is on it."""
    return hasattr(module, "_hf_hook")


# accelerate's add_hook_to_module keeps the forward it wraps in `_old_forward` and looks it up at every call
# (accelerate/hooks.py new_forward: pre_forward, `module._old_forward(...)`, post_forward).
ACCELERATE_INNER_FORWARD = "_old_forward"


def accelerate_wraps_forward(module: torch.nn.Module) -> bool:
    """Whether the module's current forward is accelerate's wrapper (its hook is the outermost one)."""
    forward = vars(module).get("forward")
    function = getattr(forward, "func", None)  # a functools.partial over accelerate's new_forward
    return has_offload_hook(module) and getattr(function, "__module__", None) == "accelerate.hooks"


def accelerate_offloaded_tensor(module: torch.nn.Module, name: str) -> torch.Tensor | None:
    """The stored value of a tensor that accelerate's sequential offload keeps on the meta device between calls:
    its AlignDevicesHook (alone or inside a SequentialHook's `hooks`) holds it in `weights_map`, by tensor name."""
    hook = getattr(module, "_hf_hook", None)
    for candidate in getattr(hook, "hooks", None) or (hook,):
        weights = getattr(candidate, "weights_map", None)
        if weights is not None and name in weights:
            return weights[name]
    return None


def accelerate_inner_forward(module: torch.nn.Module) -> Callable[..., Any]:
    return getattr(module, ACCELERATE_INNER_FORWARD)


def set_accelerate_inner_forward(module: torch.nn.Module, forward: Callable[..., Any]) -> None:
    setattr(module, ACCELERATE_INNER_FORWARD, forward)


# ---------------------------------------------------------------------------------------------------------
# group offloading (diffusers/hooks/group_offloading.py)

# On the top-level module, group offloading registers the hook that brings its own parameters and the modules
# outside its block lists onto the device and moves the inputs there ("group_offloading"), and with streams the
# one that records the blocks' order on the first call ("lazy_prefetch_group_offloading").
GROUP_OFFLOADING_HOOKS = ("group_offloading", "lazy_prefetch_group_offloading")


def is_group_offloading_hook(name: str) -> bool:
    return name in GROUP_OFFLOADING_HOOKS


def offload_group(module: torch.nn.Module) -> Any:
    """The ModuleGroup whose group-offloading hook sits on this very module (a block, under block-level
    offloading), or None."""
    registry = own_hook_registry(module)
    hook = registry.get_hook(GROUP_OFFLOADING_HOOKS[0]) if registry is not None else None
    return getattr(hook, "group", None)


def group_is_onloaded(group: Any) -> bool:
    """Whether a ModuleGroup's weights are on its onload device now (onload_/offload_ move them all together)."""
    first = next(itertools.chain((p for m in group.modules for p in m.parameters()), group.parameters), None)
    return first is not None and first.device != torch.device(group.offload_device)


def onload_group(group: Any) -> None:
    """ModuleGroup.onload_, waited for: with a CUDA stream the copy is asynchronous."""
    group.onload_()
    wait_for_group(group)


def wait_for_group(group: Any) -> None:
    """Wait for a prefetch on the group's stream (ModuleGroup.stream), if it has one."""
    if group.stream is not None:
        group.stream.synchronize()


def offload_group_now(group: Any) -> None:
    group.offload_()


def register_without_initializing(registry: HookRegistry, hook: ModelHook, name: str) -> None:
    """Register a hook that was registered before and taken off: its initialize_hook already ran (group
    offloading's would offload again, its prefetch hook would add its layer trackers twice and fail)."""
    initialize = vars(hook).get("initialize_hook")
    hook.initialize_hook = lambda module: module  # an instance attribute, shadowing the class's for one call
    try:
        registry.register_hook(hook, name)
    finally:
        if initialize is None:
            del hook.initialize_hook
        else:
            hook.initialize_hook = initialize


# ---------------------------------------------------------------------------------------------------------
# pipelines (FluxPipeline and the pipelines copied from it pack 2x2 latent patches with private static methods)


def latent_packer(pipe: Any) -> Callable[..., torch.Tensor] | None:
    """The pipeline's `_pack_latents`, where it packs latents into patches itself; None otherwise."""
    pack = getattr(pipe, "_pack_latents", None)
    return pack if callable(pack) else None


def pack_latents(pipe: Any, latents: torch.Tensor, batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """FluxPipeline._pack_latents: (batch, channels, height, width) latents as a sequence of 2x2 patches."""
    return pipe._pack_latents(latents, batch, channels, height, width)


def latent_image_ids(
    pipe: Any, batch: int, height: int, width: int, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """FluxPipeline._prepare_latent_image_ids: the positions of a packed (height, width) patch grid."""
    return pipe._prepare_latent_image_ids(batch, height, width, device, dtype)


# ---------------------------------------------------------------------------------------------------------
# context parallelism (diffusers/hooks/context_parallel.py, models/_modeling_parallel.py)

# The hooks on the transformer itself for its _cp_plan's "" entry, by the name prefixes context_parallel.py
# registers them under ("cp_input---{module_id}", "cp_output---{module_id}").
CONTEXT_PARALLEL_ROOT_HOOKS = ("cp_input---", "cp_output---")


def is_context_parallel_root_hook(name: str) -> bool:
    return name in CONTEXT_PARALLEL_ROOT_HOOKS  # the root's module_id is "": the name is the prefix itself


def context_parallel_config(module: torch.nn.Module) -> Any:
    """The ContextParallelConfig of a model whose parallelism is enabled (`_parallel_config` is set by
    enable_parallelism and from_pretrained(parallel_config=...)); None otherwise or before its mesh exists."""
    parallel = getattr(module, "_parallel_config", None)
    sharding = getattr(parallel, "context_parallel_config", None)
    if sharding is None or getattr(sharding, "_flattened_mesh", None) is None:
        return None
    return sharding


def sharding_group(sharding: Any) -> Any:
    """The process group of the ranks that share one sequence (the config's flattened ring x ulysses mesh)."""
    return sharding._flattened_mesh.get_group()


def shard_sequence(stream: torch.Tensor, dim: int, sharding: Any) -> torch.Tensor | None:
    """This rank's shard of `stream` along `dim`, cut as diffusers cuts its sequence inputs; None when diffusers
    would not split it evenly (and the config allows no uneven split)."""
    from diffusers.hooks.context_parallel import EquipartitionSharder, PartitionAnythingSharder

    mesh = sharding._flattened_mesh
    if sharding.ulysses_anything or sharding.ring_anything:
        return PartitionAnythingSharder.shard_anything(stream, dim, mesh)
    if stream.shape[dim] % mesh.size() == 0:
        return EquipartitionSharder.shard(stream, dim, mesh)
    return None


# ---------------------------------------------------------------------------------------------------------
# diffusers' own step caches (diffusers/hooks/*.py)

# By the names their apply_* functions register hooks under and by hook class, so one applied directly (not
# through enable_cache) is found too, on the transformer or any submodule.
DIFFUSERS_CACHE_HOOKS = {
    "FirstBlockCache": ("fbc_leader_block_hook", "fbc_block_hook", "FBCHeadBlockHook", "FBCBlockHook"),
    "MagCache": ("mag_cache_leader_block_hook", "mag_cache_block_hook", "MagCacheHeadHook", "MagCacheBlockHook"),
    "FasterCache": ("faster_cache_denoiser", "faster_cache_block", "FasterCacheDenoiserHook", "FasterCacheBlockHook"),
    "PyramidAttentionBroadcast": ("pyramid_attention_broadcast", "PyramidAttentionBroadcastHook"),
    "TaylorSeerCache": ("taylorseer_cache", "TaylorSeerCacheHook"),
    "SeaCache": (
        "sea_cache_root",
        "sea_cache_leader_block",
        "sea_cache_block",
        "sea_cache_post_norm",
        "SeaCacheRootHook",
        "SeaCacheLeaderBlockHook",
        "SeaCacheBlockHook",
        "SeaCachePostNormHook",
    ),
}
_CACHE_BY_MARK = {mark: cache for cache, marks in DIFFUSERS_CACHE_HOOKS.items() for mark in marks}


def diffusers_cache_of_hook(name: str, hook: Any) -> str | None:
    """Which diffusers cache a registered hook belongs to (by its registered name or class), else None."""
    return _CACHE_BY_MARK.get(name) or _CACHE_BY_MARK.get(type(hook).__name__)


def transformer_block_identifiers() -> tuple[str, ...]:
    """The attribute names diffusers' caches look for blocks under (hooks/_common.py); () where it moved."""
    try:
        from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
    except ImportError:
        return ()
    return tuple(_ALL_TRANSFORMER_BLOCK_IDENTIFIERS)


def unregistered_block_class(blocks: list[torch.nn.Module]) -> str | None:
    """The first block class diffusers' TransformerBlockRegistry (hooks/_helpers.py) lacks metadata for; None
    when all are registered or the registry cannot be reached in this diffusers."""
    from diffusers.utils.torch_utils import unwrap_module

    try:
        from diffusers.hooks._helpers import TransformerBlockRegistry
    except ImportError:
        return None
    for block in blocks:
        kind = type(unwrap_module(block))
        try:
            TransformerBlockRegistry.get(kind)
        except ValueError:
            return kind.__name__
    return None


def taylorseer_block_patterns() -> tuple[str, ...] | None:
    """The module-name patterns TaylorSeerCache hooks (hooks/taylorseer_cache.py); None where it moved."""
    try:
        from diffusers.hooks.taylorseer_cache import _TRANSFORMER_BLOCK_IDENTIFIERS
    except ImportError:
        return None
    return tuple(_TRANSFORMER_BLOCK_IDENTIFIERS)


def magcache_tail_hooks(module: torch.nn.Module) -> list[Any]:
    """MagCache's tail-block hooks under `module` (hooks/mag_cache.py registers every block hook under
    `_MAG_CACHE_BLOCK_HOOK`; the tail one has `is_tail`)."""
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK

    return [
        hook
        for sub in module.modules()
        if (registry := own_hook_registry(sub)) is not None
        and (hook := registry.get_hook(_MAG_CACHE_BLOCK_HOOK)) is not None
        and getattr(hook, "is_tail", False)
    ]


def watch_magcache_calibration(hook: Any, seen: Callable[[Any, Any], None]) -> bool:
    """Call `seen(state, context)` after each calibration step of a MagCache tail hook, by wrapping its private
    `_perform_calibration_step(state, residual)`; False when this diffusers' hook has no such step."""
    compute = getattr(hook, "_perform_calibration_step", None)
    if compute is None:
        return False

    def perform_calibration_step(state: Any, residual: torch.Tensor) -> None:
        compute(state, residual)
        seen(state, current_context(hook.state_manager))

    hook._perform_calibration_step = perform_calibration_step
    return True
