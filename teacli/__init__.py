"""teacli: TeaCache for diffusers pipelines, from the command line or from Python.

The public names are imported on first use (PEP 562), so `import teacli` and the CLI's entry point stay light:
the command line installs its Ctrl-C and SIGTERM handling before torch and diffusers are imported.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "CacheContext": "engine.context",
    "ExtractorContractError": "engine.context",
    "Decision": "engine.decision",
    "TeaCacheConfig": "engine.config",
    "TeaCacheError": "engine.config",
    "TeaCacheHandle": "engine.apply",
    "apply_teacache": "generation.auto",  # fills what a config leaves out from the model's preset
    "remove_teacache": "engine.apply",
    "EXTRACTOR_REGISTRY": "engine.registry",
    "UnknownTransformerError": "engine.registry",
    "get_extractor": "engine.registry",
    "register_extractor": "engine.registry",
    "supported_classes": "engine.registry",
    "Plan": "engine.plan",
    "PlanError": "engine.plan",
    "Policy": "generation.policy",
    "PolicyError": "generation.policy",
    "choose_policy": "generation.policy",
    "GenerationSpec": "generation.generate",
    "GenerationSummary": "generation.report",
    "generate": "generation.generate",
    "Progress": "generation.progress",
    "TeacliError": "errors",
    "StepRecord": "engine.stats",
    "TeaCacheStats": "engine.stats",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'teacli' has no attribute {name!r}")
    module = importlib.import_module(f".{module_name}", __name__)
    if module_name == "engine.registry":
        # EXTRACTOR_REGISTRY is complete as soon as it is reached through teacli.
        module.load_builtin_extractors()
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
