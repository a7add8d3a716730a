"""`teacli.apply_teacache`: the engine's apply, with what a config leaves out taken from the model's preset.

The engine's own apply (teacli.engine.apply) takes complete configs and knows no model. This one finds the
preset of the pipeline (models.for_pipeline), builds that preset's configs exactly as the command line does
(caching.teacache_configs: a second expert's own settings included), lays the user's values over them and applies
the result. A config with coefficients (or a plan) is applied as given: no preset is looked up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from ..engine.apply import TeaCacheHandle, denoisers
from ..engine.apply import apply_teacache as apply_configs
from ..engine.config import TeaCacheConfig
from ..models.for_pipeline import PipelinePreset, preset_for_pipeline
from .caching import teacache_configs

logger = logging.getLogger("teacli")

# The fields a preset gives; None in the user's config means "the preset's".
PRESET_FIELDS = ("thresh", "ret_steps", "cutoff_steps", "rel_l1_range", "modulated_input")
# The preset's own: a config without coefficients says nothing about where they come from.
PRESET_ONLY = ("coefficients", "coefficients_source")

Given = TeaCacheConfig | Mapping[str, TeaCacheConfig] | None


def apply_teacache(pipe_or_transformer: Any, config: Given = None) -> TeaCacheHandle:
    """Hook TeaCache onto a diffusers pipeline's transformer(s) or a bare transformer; what `config` leaves out
    comes from the preset of the model.

    The preset is found by the hub id or folder the pipeline was loaded from (`pipe.name_or_path`, a transformer's
    `config._name_or_path`), else by the transformer's class (the first of that class's presets; the log and
    `handle.stats` say which). From it come the coefficients, the threshold, ret_steps, cutoff_steps,
    rel_l1_range, modulated_input and, on two-expert pipelines (Wan 2.2), the second expert's own coefficients
    and settings. Every value `config` gives wins; a config with its own coefficients (or a plan) is applied as
    given, with no preset. `config` may also be a mapping of denoiser name to config ({"transformer": ...,
    "transformer_2": ...}). `handle.stats.preset` names the preset (None when none was used) and
    `handle.stats.coefficients_source` says how it was found and where its coefficients come from.

    On a pipeline the scheduler tells the hook where the denoising loop is, so the first and last steps are always
    computed; each CFG branch keeps its own state. Under diffusers' context parallelism it may come before or after
    enable_parallelism. Apply before enable_model_cpu_offload(); `handle.remove()` (or remove_teacache(pipe))
    undoes it, and the handle is a context manager.

    Example:
        ```python
        import torch
        from diffusers import FluxPipeline
        from teacli import TeaCacheConfig, apply_teacache

        pipe = FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", torch_dtype=torch.bfloat16).to("cuda")
        handle = apply_teacache(pipe)  # coefficients and thresh 0.25 from preset flux-dev, found by the hub id
        image = pipe("a red fox in the snow", num_inference_steps=28).images[0]
        print(handle.stats.coefficients_source)  # preset flux-dev (by hub id black-forest-labs/FLUX.1-dev): ...
        print(handle.stats.totals)  # Totals(computed=..., cached=..., forced=...)
        handle.remove()

        # A faster threshold; the coefficients are still the preset's:
        with apply_teacache(pipe, TeaCacheConfig(thresh=0.6)):
            image = pipe("a red fox in the snow", num_inference_steps=28).images[0]
        ```
    """
    config = TeaCacheConfig() if config is None else config
    if _complete(config):
        return apply_configs(pipe_or_transformer, config)
    found = preset_for_pipeline(pipe_or_transformer)
    handle = apply_configs(pipe_or_transformer, preset_filled(found, config, list(denoisers(pipe_or_transformer))))
    handle.stats.preset = found.preset.name
    handle.stats.coefficients_source = f"{found.describe()}: {found.preset.coefficients_source}"
    logger.info("TeaCache on %s: coefficients from %s", found.transformer, found.describe())
    return handle


def preset_filled(found: PipelinePreset, config: Given, names: list[str]) -> TeaCacheConfig | dict[str, Any]:
    """The configs to apply: for each denoiser, the preset's (as teacache_configs makes it) with the values
    `config` gives laid over it; a config with its own coefficients stays as it is."""
    made = teacache_configs(found.preset)
    preset_configs = made if isinstance(made, dict) else dict.fromkeys(names, made)
    base = preset_configs.get("transformer", next(iter(preset_configs.values())))
    if isinstance(config, TeaCacheConfig):
        return {name: _laid_over(preset_configs.get(name, base), config) for name in names}
    # A mapping: each entry over its own denoiser's; the engine refuses names that are not denoisers.
    return {
        name: _laid_over(preset_configs.get(name, base), given) if isinstance(given, TeaCacheConfig) else given
        for name, given in config.items()
    }


def _laid_over(preset_config: TeaCacheConfig, given: TeaCacheConfig) -> TeaCacheConfig:
    if given.complete:
        return given
    ours = {
        item.name: value
        for item in fields(given)
        if item.name not in PRESET_ONLY
        and ((value := getattr(given, item.name)) is not None or item.name not in PRESET_FIELDS)
    }
    return replace(preset_config, **ours)


def _complete(config: Any) -> bool:
    """Nothing to take from a preset (or not a config at all: the engine says what is wrong with it)."""
    if isinstance(config, TeaCacheConfig):
        return config.complete
    if isinstance(config, Mapping):
        return all(not isinstance(c, TeaCacheConfig) or c.complete for c in config.values())
    return True
