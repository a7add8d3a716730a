"""teacli: TeaCache for diffusers pipelines, from the command line or from Python."""

from .context import CacheContext, ExtractorContractError
from .decision import Decision
from .hook import TeaCacheConfig, TeaCacheError, TeaCacheHandle, apply_teacache, remove_teacache
from .registry import (
    EXTRACTOR_REGISTRY,
    UnknownTransformerError,
    get_extractor,
    register_extractor,
    supported_classes,
)
from .stats import StepRecord, TeaCacheStats

__version__ = "0.1.0"

__all__ = [
    "EXTRACTOR_REGISTRY",
    "CacheContext",
    "Decision",
    "ExtractorContractError",
    "StepRecord",
    "TeaCacheConfig",
    "TeaCacheError",
    "TeaCacheHandle",
    "TeaCacheStats",
    "UnknownTransformerError",
    "__version__",
    "apply_teacache",
    "get_extractor",
    "register_extractor",
    "remove_teacache",
    "supported_classes",
]

# Register the built-in extractors now, so EXTRACTOR_REGISTRY is complete as soon as teacli is imported.
from .registry import load_builtin_extractors as _load_builtin_extractors  # noqa: E402

_load_builtin_extractors()
