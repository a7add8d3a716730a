"""Putting TeaCache on a pipeline and taking it off: apply_teacache, remove_teacache and the handle.

apply_teacache checks that the denoisers can be hooked (no other cache) and that each config fits, then registers
one TeaCacheHook per denoiser, beneath the hooks that must see the call first: context parallelism's input split
and offloading (engine/layering.py), whichever came first.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from diffusers.utils.torch_utils import unwrap_module

from .config import COEFFICIENTS_REQUIRED, TeaCacheConfig, TeaCacheError
from .diffusers_internals import (
    cache_config,
    diffusers_cache_of_hook,
    drop_hook_registry,
    has_hook_registry,
    hook_order,
    hook_registry,
    own_hook_registry,
    restore_class_forward,
)
from .hook import TEACACHE_HOOK, TeaCacheHook
from .layering import register_beneath_outer_hooks, remove_from_beneath
from .registry import get_extractor
from .stats import TeaCacheStats

logger = logging.getLogger("teacli")

# Pipeline components that hold a denoiser; two-expert pipelines (Wan 2.2) have both.
DENOISER_COMPONENTS = ("transformer", "transformer_2")


class TeaCacheHandle:
    """What apply_teacache returns: the per-call records and a way to undo it."""

    def __init__(
        self,
        target: Any,
        modules: dict[str, torch.nn.Module],
        configs: dict[str, TeaCacheConfig],
        stats: TeaCacheStats,
    ):
        self.target = target
        self.modules = modules
        self.configs = configs  # per denoiser name
        self.stats = stats

    @property
    def config(self) -> TeaCacheConfig:
        """The config of the first denoiser (the only one, except on two-expert pipelines)."""
        return next(iter(self.configs.values()))

    @property
    def hooks(self) -> list[TeaCacheHook]:
        return [hook for module in self.modules.values() if (hook := _find_hook(module)) is not None]

    def reset(self) -> None:
        """Forget every branch state and every record, as before the first generation."""
        for hook in self.hooks:
            hook.reset_state(None)
            hook.generation = -1
        self.stats.clear()

    def remove(self) -> None:
        for module in self.modules.values():
            _remove_hook(module)

    @property
    def active(self) -> bool:
        return bool(self.hooks)

    def __enter__(self) -> TeaCacheHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def denoisers(pipe_or_transformer: Any) -> dict[str, torch.nn.Module]:
    """The transformer(s) TeaCache hooks: the module itself, or a pipeline's transformer components."""
    if isinstance(pipe_or_transformer, torch.nn.Module):
        return {"transformer": pipe_or_transformer}
    found = {
        name: module
        for name in DENOISER_COMPONENTS
        if isinstance(module := getattr(pipe_or_transformer, name, None), torch.nn.Module)
    }
    if not found:
        raise TeaCacheError(
            f"{type(pipe_or_transformer).__name__} has no transformer component; TeaCache hooks diffusion "
            "transformers (pass a pipeline with `.transformer` or the transformer module itself)"
        )
    return found


def apply_teacache(pipe_or_transformer: Any, config: TeaCacheConfig | Mapping[str, TeaCacheConfig]) -> TeaCacheHandle:
    """Hook TeaCache onto a diffusers pipeline's transformer(s) or onto a bare transformer, with configs as given.

    This is the engine's own apply: each config must be complete (coefficients or a plan). `teacli.apply_teacache`
    (teacli.generation.auto) is the public one: it fills a config without coefficients from the model's preset
    and then calls this. Every transformer call then goes through the extractor registered for its class. On a pipeline
    the scheduler tells the hook where the denoising loop is, so the first and last steps are
    always computed; each `cache_context` name (the CFG branch) keeps its own state.

    `config` is one TeaCacheConfig for every denoiser, or one per denoiser name for pipelines with
    two experts (Wan 2.2: {"transformer": ..., "transformer_2": ...}), each with its own coefficients.

    Under diffusers' context parallelism it may come before or after enable_parallelism: TeaCache always
    runs inside the input split, on this rank's shard, and caches that shard's residual.
    """
    modules = denoisers(pipe_or_transformer)
    configs = _configs_by_module(config, modules)
    extractors = {name: get_extractor(type(unwrap_module(m)).__name__) for name, m in modules.items()}
    for name, module in modules.items():
        _check_can_hook(name, module)
        _check_config_fits(name, configs[name], bare=isinstance(pipe_or_transformer, torch.nn.Module))

    if isinstance(pipe_or_transformer, torch.nn.Module):
        scheduler = None
    else:
        pipe_ref = weakref.ref(pipe_or_transformer)
        scheduler = lambda: getattr(pipe_ref(), "scheduler", None)  # noqa: E731

    stats = TeaCacheStats()
    for name, module in modules.items():
        config = configs[name]
        hook = TeaCacheHook(extractors[name], config, stats, name, scheduler)
        hook._made_registry = not has_hook_registry(module)
        register_beneath_outer_hooks(module, hook, TEACACHE_HOOK, name)
        _log_enabled(name, module, config)
    return TeaCacheHandle(pipe_or_transformer, modules, configs, stats)


def _log_enabled(name: str, module: torch.nn.Module, config: TeaCacheConfig) -> None:
    """One line saying how TeaCache decides on this denoiser (debug only while recording for calibration)."""
    if config.record_output_change:
        logger.debug("TeaCache recording input and output changes on %s for calibration", name)
    elif config.plan is not None:
        plan = config.plan
        logger.info(
            "TeaCache enabled on %s (%s): a plan computing %d of %d steps (%s), %s",
            name,
            type(unwrap_module(module)).__name__,
            plan.budget,
            plan.steps,
            plan.timeline(),
            plan.source or "given",
        )
    else:
        logger.info(
            "TeaCache enabled on %s (%s): thresh %g, coefficients: %s",
            name,
            type(unwrap_module(module)).__name__,
            config.thresh,
            config.coefficients_source,
        )


def _configs_by_module(config: Any, modules: dict[str, torch.nn.Module]) -> dict[str, TeaCacheConfig]:
    if isinstance(config, TeaCacheConfig):
        return dict.fromkeys(modules, config)
    if not isinstance(config, Mapping) or not all(isinstance(c, TeaCacheConfig) for c in config.values()):
        raise TypeError(
            f"config must be a TeaCacheConfig or a mapping of denoiser name to one, got {type(config).__name__}"
        )
    missing, unknown = sorted(set(modules) - set(config)), sorted(set(config) - set(modules))
    if missing or unknown:
        raise TeaCacheError(
            f"per-denoiser configs must match the denoisers {sorted(modules)}: "
            + "; ".join(filter(None, [missing and f"missing {missing}", unknown and f"unknown {unknown}"]))
        )
    return dict(config)


def remove_teacache(pipe_or_transformer: Any) -> None:
    """Undo apply_teacache: the transformer(s) behave exactly as before they were hooked."""
    for module in denoisers(pipe_or_transformer).values():
        _remove_hook(module)


def _check_can_hook(name: str, module: torch.nn.Module) -> None:
    if _find_hook(module) is not None:
        raise TeaCacheError(f"TeaCache is already applied to {name}; call remove_teacache() before applying it again")
    if getattr(module, "is_cache_enabled", False):
        raise TeaCacheError(
            f"{name} already has a diffusers cache enabled ({type(cache_config(module)).__name__}); "
            "call disable_cache() on it first, caches do not stack"
        )
    for where, submodule in module.named_modules():
        registry = own_hook_registry(submodule)
        for hook_name, hook in getattr(registry, "hooks", {}).items():
            cache = diffusers_cache_of_hook(hook_name, hook)
            if cache is not None:
                raise TeaCacheError(
                    f"{name} already has {cache} enabled (diffusers hook {hook_name!r} on {where or name}); "
                    "remove it first (HookRegistry.remove_hook with recurse=True), caches do not stack"
                )


def _check_config_fits(name: str, config: TeaCacheConfig, bare: bool) -> None:
    """Fail at apply time on what would only fail at the first call."""
    if not config.complete:
        raise TeaCacheError(COEFFICIENTS_REQUIRED)
    if bare and config.has_window and config.num_inference_steps is None:
        raise TeaCacheError(
            f"the cache window (start/end) on a bare {name} needs the number of steps: "
            "set num_inference_steps in TeaCacheConfig"
        )
    if config.cache_device is not None:
        try:
            torch.empty(0, device=config.cache_device)
        except (RuntimeError, AssertionError):  # AssertionError: torch built without that backend
            raise TeaCacheError(
                f"cache_device {str(config.cache_device)!r} is not available here; use 'cpu' or a device torch sees"
            ) from None


def _find_hook(module: torch.nn.Module) -> TeaCacheHook | None:
    registry = hook_registry(module)
    return registry.get_hook(TEACACHE_HOOK) if registry is not None else None


def _remove_hook(module: torch.nn.Module) -> None:
    hook = _find_hook(module)
    if hook is None:
        return
    registry = hook_registry(module)

    def restore_forward() -> None:
        # The module's forward is the class's again, as it was (unless an instance forward was there before).
        if not hook_order(registry) and not hook._had_instance_forward:
            restore_class_forward(module)

    remove_from_beneath(module, registry, TEACACHE_HOOK, restore_forward)
    # An empty registry apply_teacache made goes too.
    if not registry.hooks and hook._made_registry:
        drop_hook_registry(module)
