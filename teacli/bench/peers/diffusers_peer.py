"""The shared part of the peers that are diffusers' own caches: availability, enable_cache on every denoiser, and
an undo that leaves the modules exactly as they were."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ...engine.apply import denoisers
from ...engine.config import TeaCacheError
from ...engine.diffusers_internals import (
    CACHE_CONFIG_ATTRIBUTE,
    REGISTRY_ATTRIBUTE,
    cache_config,
    hook_order,
    own_hook_registry,
    unregistered_block_class,
)
from ...generation.counting import block_lists
from .base import Peer, PeerError, PeerSetting


def diffusers_config_class(name: str) -> type | None:
    import diffusers.hooks

    return getattr(diffusers.hooks, name, None)


def diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def _uses_cache_context(pipe: Any) -> bool:
    """Whether the pipeline names its transformer calls with `cache_context` (FBCache and TaylorSeer need it)."""
    try:
        source = inspect.getsource(type(pipe).__call__)
    except (OSError, TypeError):
        return True  # no source to read: let enable_cache and the run say
    return "cache_context" in source


class DiffusersPeer(Peer):
    """A diffusers cache, enabled through each denoiser's enable_cache with the config `make_config` builds."""

    config_name = ""
    needs_cache_context = True  # its hooks read the state of the current cache_context
    needs_block_metadata = True  # its hooks look blocks up in diffusers' TransformerBlockRegistry
    min_blocks = 1

    def unavailable(self, pipe: Any) -> str | None:
        if diffusers_config_class(self.config_name) is None:
            return (
                f"{self.config_name} is not in diffusers {diffusers_version()}: upgrade diffusers to run {self.method}"
            )
        try:
            modules = denoisers(pipe)
        except TeaCacheError as error:
            return str(error)
        from diffusers.models.cache_utils import CacheMixin

        for name, module in modules.items():
            kind = type(module).__name__
            if not isinstance(module, CacheMixin):
                return f"{name} ({kind}) is not a diffusers CacheMixin model (no enable_cache): {self.title} cannot run"
            blocks = [block for _, blocks in block_lists(module) for block in blocks]
            if len(blocks) < self.min_blocks:
                return f"{self.title} needs {self.min_blocks}+ transformer blocks; {name} ({kind}) has {len(blocks)}"
            if self.needs_block_metadata and (missing := unregistered_block_class(blocks)):
                version = diffusers_version()
                return f"diffusers {version} has no block metadata for {missing} ({kind}): {self.title} cannot run"
        if self.needs_cache_context and not _uses_cache_context(pipe):
            kind = type(pipe).__name__
            return f"{kind} does not name its transformer calls with cache_context, which {self.title} needs"
        return None

    def make_config(self, module: torch.nn.Module, name: str, params: dict[str, Any], steps: int) -> Any:
        raise NotImplementedError

    def apply(self, pipe: Any, setting: PeerSetting, steps: int) -> Callable[[], None]:
        params = self._check_setting(setting)
        modules = denoisers(pipe)
        configs = {name: self.make_config(module, name, params, steps) for name, module in modules.items()}
        return enable_on_denoisers(modules, configs)


def enable_on_denoisers(modules: dict[str, torch.nn.Module], configs: dict[str, Any]) -> Callable[[], None]:
    """enable_cache on every denoiser; the undo disables them and restores what enable/disable leave behind."""
    snapshot = AttributeSnapshot(modules.values())
    enabled: list[torch.nn.Module] = []

    def undo() -> None:
        for module in reversed(enabled):
            if module.is_cache_enabled:
                module.disable_cache()
        enabled.clear()
        snapshot.restore()

    try:
        for name, module in modules.items():
            if module.is_cache_enabled:
                raise PeerError(
                    f"{name} already has a diffusers cache ({type(cache_config(module)).__name__}); "
                    "disable it first, caches do not stack"
                )
            module.enable_cache(configs[name])
            enabled.append(module)
    except BaseException:
        undo()
        raise
    return undo


class AttributeSnapshot:
    """What enable_cache/disable_cache leave on modules: after disable_cache, every hooked block keeps its
    original bound `forward` as an instance attribute and an empty `_diffusers_hook` registry, and the
    transformer an instance `_cache_config = None`. restore() puts back exactly the attributes there were,
    and the registration order of each module's children: cache-dit's undo re-registers FLUX's block lists
    in another order (single_transformer_blocks before transformer_blocks), and diffusers' FirstBlockCache
    and teacli's call counter take the registration order as the order the blocks run in."""

    KEYS = ("forward", REGISTRY_ATTRIBUTE, CACHE_CONFIG_ATTRIBUTE)

    def __init__(self, roots: Iterable[torch.nn.Module]) -> None:
        self.roots = list(roots)
        self.before: list[tuple[torch.nn.Module, dict[str, Any]]] = [
            (module, {key: vars(module)[key] for key in self.KEYS if key in vars(module)})
            for root in self.roots
            for module in root.modules()
        ]
        self.children: list[tuple[torch.nn.Module, list[str]]] = [
            (module, list(vars(module)["_modules"])) for root in self.roots for module in root.modules()
        ]

    def restore(self) -> None:
        for module, order in self.children:
            children = vars(module)["_modules"]
            if list(children) != order and set(children) == set(order):
                reordered = {name: children[name] for name in order}
                children.clear()
                children.update(reordered)
        for module, before in self.before:
            attrs = vars(module)
            registry = attrs.get(REGISTRY_ATTRIBUTE)
            if registry is not None and registry is not before.get(REGISTRY_ATTRIBUTE) and hook_order(registry):
                continue  # someone else hooked it meanwhile: leave their hooks alone
            hooked = registry is not None and bool(hook_order(registry))
            for key in self.KEYS:
                if key == "forward" and hooked:
                    continue  # a remaining hook owns forward
                if key in before:
                    attrs[key] = before[key]
                else:
                    attrs.pop(key, None)
        for root in self.roots:
            registry = own_hook_registry(root)
            if registry is not None:
                registry.invalidate_child_registries_cache()
