"""Extractors keyed by transformer class name (`module.__class__.__name__`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..errors import TeacliError
from .context import CacheContext

Extractor = Callable[..., CacheContext]

EXTRACTOR_REGISTRY: dict[str, Extractor] = {}

_builtins_loaded = False


class UnknownTransformerError(TeacliError, ValueError):
    """No extractor is registered for a transformer class."""


def register_extractor(class_name: str, fn: Extractor, *, lora_kwargs: str | None = None) -> Extractor:
    """Register `fn(module, *args, **kwargs) -> CacheContext` for transformers of `class_name`.

    `lora_kwargs` names the forward argument that carries a LoRA `scale` (diffusers decorates such
    forwards with `apply_lora_scale`); the hook then scales the LoRA layers around the whole call,
    as the replaced forward would have. Registering a name again replaces the previous extractor,
    so users can override a built-in one.
    """
    if not isinstance(class_name, str) or not class_name:
        raise ValueError("register_extractor needs the transformer class name as a non-empty string")
    if not callable(fn):
        raise TypeError(f"the extractor for {class_name} must be callable, got {type(fn).__name__}")
    if lora_kwargs is not None:
        fn.lora_kwargs = lora_kwargs  # type: ignore[attr-defined]
    EXTRACTOR_REGISTRY[class_name] = fn
    return fn


def extractor_for(class_name: str, *, lora_kwargs: str | None = None) -> Callable[[Extractor], Extractor]:
    """Decorator form of register_extractor, used by the modules in teacli.extractors."""

    def decorate(fn: Extractor) -> Extractor:
        return register_extractor(class_name, fn, lora_kwargs=lora_kwargs)

    return decorate


def load_builtin_extractors() -> None:
    """Import teacli.extractors once; each family module registers itself on import."""
    global _builtins_loaded
    if not _builtins_loaded:
        importlib.import_module("teacli.extractors")
        _builtins_loaded = True


def supported_classes() -> list[str]:
    load_builtin_extractors()
    return sorted(EXTRACTOR_REGISTRY)


def has_extractor(class_name: str) -> bool:
    load_builtin_extractors()
    return class_name in EXTRACTOR_REGISTRY


def unsupported_message(class_name: str) -> str:
    """What to tell a user whose transformer class has no extractor: which, what is, and what to do."""
    return (
        f"TeaCache has no extractor for {class_name}; supported: {', '.join(supported_classes())}. "
        "To add one, write an extractor and a preset (docs/models.md, 'Adding a model')"
    )


def get_extractor(class_name: str) -> Extractor:
    load_builtin_extractors()
    try:
        return EXTRACTOR_REGISTRY[class_name]
    except KeyError:
        raise UnknownTransformerError(unsupported_message(class_name)) from None


# The built-in extractors register on import, so EXTRACTOR_REGISTRY is complete once this module is.
load_builtin_extractors()
