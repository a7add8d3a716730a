"""Where TeaCache's hook sits among the other hooks on a denoiser: beneath every hook that prepares the call.

TeaCache replaces the transformer's forward, so a hook it wraps never runs. Three kinds of hook must see the
call before TeaCache does, whichever was added first:
- diffusers' context-parallel input split: TeaCache decides on, and caches, this rank's shard;
- diffusers' group offloading on the transformer itself: it brings the embedders, norms and the transformer's
  own parameters onto the device and moves the inputs there;
- accelerate's offload hook (enable_model_cpu_offload, enable_sequential_cpu_offload): it moves the whole
  transformer, or its own parameters, onto the device.
Hooks on the blocks need nothing: TeaCache calls the blocks, so their hooks run. Taking TeaCache off leaves the
others exactly as they were, so offloading keeps working after a bench row or a `remove_teacache`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook

from .config import TeaCacheError
from .diffusers_internals import (
    accelerate_inner_forward,
    accelerate_wraps_forward,
    has_offload_hook,
    hook_order,
    is_context_parallel_root_hook,
    is_group_offloading_hook,
    register_without_initializing,
    set_accelerate_inner_forward,
)


def stays_outside(hook_name: str) -> bool:
    """Whether a diffusers hook on the transformer itself must run before TeaCache's."""
    return is_context_parallel_root_hook(hook_name) or is_group_offloading_hook(hook_name)


def register_beneath_outer_hooks(module: torch.nn.Module, hook: ModelHook, name: str, module_name: str) -> None:
    """Register `hook` as `name` on `module`, beneath the hooks that must run first (see the module docstring)."""
    registry = HookRegistry.check_if_exists_or_initialize(module)
    with beneath_accelerate(module, module_name):
        _register_beneath(registry, hook, name, module_name)
    registry.invalidate_child_registries_cache()


def remove_from_beneath(module: torch.nn.Module, registry: HookRegistry, name: str, after: Callable[[], None]) -> None:
    """Take the hook `name` off, the hooks above it kept as they are; `after` runs while the forward accelerate
    wraps is the module's own (restoring the class forward there is safe)."""
    with beneath_accelerate(module, None):
        registry.remove_hook(name, recurse=False)
        registry.invalidate_child_registries_cache()
        after()


def _register_beneath(registry: HookRegistry, hook: ModelHook, name: str, module_name: str) -> None:
    """The last hook registered runs first: the outer ones registered before `hook` are taken off and put back
    above it, in their order, without initializing them again."""
    order = hook_order(registry)
    first = next((i for i, hook_name in enumerate(order) if stays_outside(hook_name)), None)
    if first is None:
        registry.register_hook(hook, name)
        return
    others = [hook_name for hook_name in order[first:] if not stays_outside(hook_name)]
    if others:
        raise TeaCacheError(
            f"{module_name} has hooks {others} added after context parallelism or group offloading; apply "
            "TeaCache before them"
        )
    above = [(hook_name, registry.hooks[hook_name]) for hook_name in order[first:]]
    for hook_name, _ in reversed(above):
        registry.remove_hook(hook_name, recurse=False)
    registry.register_hook(hook, name)
    for hook_name, outer in above:
        register_without_initializing(registry, outer, hook_name)


@contextmanager
def beneath_accelerate(module: torch.nn.Module, module_name: str | None) -> Iterator[None]:
    """While inside, the module's forward is the one accelerate's offload hook wraps; what is registered or removed
    there becomes what the hook wraps, so the hook keeps moving weights and inputs before TeaCache runs."""
    if not has_offload_hook(module):
        yield
        return
    if not accelerate_wraps_forward(module):
        if module_name is None:  # taking TeaCache off: leave the chain as it is
            yield
            return
        raise TeaCacheError(
            f"{module_name} has hooks added after accelerate's offload hook; apply TeaCache before them, or "
            "enable offloading after TeaCache"
        )
    outer = module.forward
    module.forward = accelerate_inner_forward(module)
    try:
        yield
    finally:
        set_accelerate_inner_forward(module, module.forward)
        module.forward = outer
