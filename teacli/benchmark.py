"""Benchmark runs: configurations measured round-robin, so drift hits all of them alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .hook import TeaCacheConfig, apply_teacache
from .report import BenchRow
from .runner import GenerationRequest, generate, psnr

# A threshold -> the config for apply_teacache (one per denoiser for two-expert pipelines).
MakeConfig = Callable[[float], TeaCacheConfig | dict[str, TeaCacheConfig]]


@dataclass(frozen=True)
class BenchConfig:
    label: str
    thresh: float | None  # None: the unhooked pipeline


@dataclass
class BenchResult:
    rows: list[BenchRow]
    baseline: BenchRow | None
    images: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, model: str, steps: int, device: str) -> dict:
        return {
            "model": model,
            "steps": steps,
            "device": device,
            "baseline": self.baseline.to_dict(None) if self.baseline else None,
            "rows": [row.to_dict(self.baseline) for row in self.rows],
        }


def _run_once(
    pipe: Any, make_config: MakeConfig, request: GenerationRequest, config: BenchConfig
) -> tuple[Any, float, int, int]:
    """One generation; returns (image, seconds, transformer calls that ran the blocks, all calls)."""
    if config.thresh is None:
        result = generate(pipe, request)
        return result.output, result.seconds, request.steps, request.steps
    handle = apply_teacache(pipe, make_config(config.thresh))
    try:
        result = generate(pipe, request)
    finally:
        handle.remove()
    totals = handle.stats.totals
    return result.output, result.seconds, totals.executed, totals.calls


def run_bench(
    pipe: Any,
    make_config: MakeConfig,
    request: GenerationRequest,
    configs: list[BenchConfig],
    *,
    runs: int,
    warmup: int,
    on_run: Callable[[str], None] = lambda label: None,
) -> BenchResult:
    for _ in range(warmup):
        for config in configs:
            _run_once(pipe, make_config, request, config)
            on_run(f"warm-up {config.label}")
    seconds: dict[str, list[float]] = {c.label: [] for c in configs}
    counts: dict[str, tuple[int, int]] = {}
    images: dict[str, Any] = {}
    for _ in range(runs):
        for config in configs:
            image, elapsed, executed, calls = _run_once(pipe, make_config, request, config)
            seconds[config.label].append(elapsed)
            counts[config.label] = (executed, calls)
            images.setdefault(config.label, image)
            on_run(config.label)
    baseline_image = next((images[c.label] for c in configs if c.thresh is None), None)
    rows = [
        BenchRow(
            label=c.label,
            thresh=c.thresh,
            computed=counts[c.label][0],
            calls=counts[c.label][1],
            seconds=seconds[c.label],
            psnr=psnr(images[c.label], baseline_image) if baseline_image is not None else None,
        )
        for c in configs
    ]
    baseline = next((row for row in rows if row.thresh is None), None)
    return BenchResult([row for row in rows if row.thresh is not None], baseline, images)
