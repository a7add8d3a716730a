"""What a bench compares: one configuration per row (vanilla, TeaCache at a threshold, a plan, a peer's setting),
and the TeaCache config each of teacli's own rows applies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..engine.config import TeaCacheConfig
from ..generation.preparation import CacheOptions
from ..models.catalog import Preset

# A threshold (or, by keyword, a plan) -> the config for apply_teacache (one per denoiser for two-expert pipelines).
MakeConfig = Callable[..., TeaCacheConfig | dict[str, TeaCacheConfig]]
VANILLA, TEACACHE = "vanilla", "teacache"
Dropped = list[tuple[str, str]]  # (peer method, the one line saying why it did not run)


@dataclass(frozen=True)
class BenchConfig:
    name: str  # the row label: "vanilla", "teacache@0.2", "fbcache@0.05"
    method: str  # "vanilla", "teacache" or a peer's method
    setting: str = ""  # human-readable: "thresh=0.2", "threshold=0.05"
    thresh: float | None = None  # TeaCache's threshold
    plan: Any = None  # a teacli.engine.plan.Plan for teacli's scheduled policies (teacache-plan, teacache-uniform)
    peer: Any = None  # a teacli.bench.peers.PeerSetting for the other caches
    adapted_from: str | None = None  # the row label as asked, when the peer's fit() changed the setting
    adaptation: str | None = None  # fit()'s one line saying what changed and why
    quantize: str | None = None  # the quantization its pipeline was loaded with, when a bench compares several


def quantized(configs: Sequence[BenchConfig], quantize: str | None) -> list[BenchConfig]:
    """The rows as they run on a pipeline quantized with `quantize`, labelled "teacache@0.2 +torchao-int8" (None: the
    unquantized pipeline, labels as they are)."""
    if quantize is None:
        return list(configs)
    return [replace(config, name=f"{config.name} +{quantize}", quantize=quantize) for config in configs]


def bench_configs(
    thresholds: Sequence[float], peer_settings: Sequence[Any] = (), policies: Sequence[Any] = ()
) -> list[BenchConfig]:
    """vanilla, teacache@0 (the hook's overhead), teacache@T for each threshold, teacli's scheduled policies
    (teacli.generation.policy.Policy with a plan: teacache-plan@K), then the peers' settings."""
    configs = [BenchConfig(VANILLA, VANILLA)]
    for thresh in dict.fromkeys([0.0, *thresholds]):
        configs.append(BenchConfig(f"teacache@{thresh:g}", TEACACHE, f"thresh={thresh:g}", thresh=thresh))
    for policy in policies:
        configs.append(BenchConfig(policy.label, policy.name, f"budget={policy.budget}", plan=policy.plan))
    configs += [BenchConfig(s.label, s.method, s.setting, peer=s) for s in peer_settings]
    return configs


def teacache_config_maker(
    preset: Preset,
    coefficients: Sequence[float] | None = None,
    cache: CacheOptions | None = None,
    coefficients_source: str = "user",
) -> MakeConfig:
    """The one place the bench assembles TeaCache configs, in process and in an isolated worker alike: the
    preset's (per denoiser where it has experts) at the row's threshold or plan, the user's coefficients (labelled
    `coefficients_source`) and cache options applied to every denoiser."""
    from ..generation.caching import teacache_configs

    def make(thresh: float | None = None, plan: Any = None) -> TeaCacheConfig | dict[str, TeaCacheConfig]:
        return teacache_configs(
            preset, thresh, coefficients=coefficients, coefficients_source=coefficients_source, plan=plan, cache=cache
        )

    return make
