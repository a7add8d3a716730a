"""The one place a preset and the user's cache settings become TeaCache configs.

generate, `--prompts`, bench and calibrate all call `teacache_configs`, so a threshold, a plan, coefficients and
the cache window mean the same thing (and are labelled the same way in reports) wherever they are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..engine.config import TeaCacheConfig
from ..models.catalog import ExpertOverride, Preset

if TYPE_CHECKING:
    from ..engine.plan import Plan
    from .preparation import CacheOptions

# What reports, logs and metadata call coefficients the user gave in place of the preset's.
USER_COEFFICIENTS = "user (--coefficients)"

Configs = TeaCacheConfig | dict[str, TeaCacheConfig]


def teacache_configs(
    preset: Preset,
    thresh: float | None = None,
    *,
    coefficients: Sequence[float] | None = None,
    plan: Plan | None = None,
    cache: CacheOptions | None = None,
    coefficients_source: str = USER_COEFFICIENTS,
) -> Configs:
    """The preset's TeaCacheConfig; a dict per denoiser when it has expert overrides (Wan 2.2).

    `thresh`, `coefficients` and a `plan` (teacli.engine.plan: it then decides instead of the threshold) apply to
    every denoiser, and so do the `cache` options (start, end, ret_steps, ...). Given coefficients drop the
    preset's calibrated rel_l1_range too: that range belongs to the fit it came with, not to these; they are
    labelled `coefficients_source`.
    """

    def config(override: ExpertOverride) -> TeaCacheConfig:
        pick = lambda own, shared: shared if own is None else own  # noqa: E731
        own_fit = coefficients is None
        return TeaCacheConfig(
            thresh=thresh if thresh is not None else pick(override.thresh, preset.thresh),
            coefficients=pick(override.coefficients, preset.coefficients) if own_fit else tuple(coefficients),
            ret_steps=pick(override.ret_steps, preset.ret_steps),
            cutoff_steps=preset.cutoff_steps,
            rel_l1_range=pick(override.rel_l1_range, preset.rel_l1_range) if own_fit else None,
            coefficients_source=pick(override.coefficients_source, preset.coefficients_source)
            if own_fit
            else coefficients_source,
            modulated_input=pick(override.modulated_input, preset.modulated_input),
            plan=plan,
        )

    base = config(ExpertOverride())
    configs: Configs = base
    if preset.experts:
        configs = {"transformer": base, **{name: config(override) for name, override in preset.experts.items()}}
    return cache.apply(configs) if cache is not None else configs


def coefficients_source(preset: Preset, coefficients: Sequence[float] | None) -> str:
    """What a run's report says its coefficients came from."""
    return USER_COEFFICIENTS if coefficients is not None else preset.coefficients_source
