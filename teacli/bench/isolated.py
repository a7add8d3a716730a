"""bench --isolate: each configuration in a fresh process of its own, loading the model itself, so nothing one
configuration leaves behind (allocator state, compiled graphs, caches) reaches the next."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..generation.measure import Run
from ..generation.preparation import CacheOptions, LoadOptions
from ..generation.runner import GenerationRequest
from .benchmark import ConfigRunner, _measured_rows, _scored
from .configs import BenchConfig, Dropped, teacache_config_maker
from .results import BenchResult, BenchRow

logger = logging.getLogger("teacli")


@dataclass(frozen=True)
class IsolatedJob:
    """Everything a fresh process needs to load the model and measure one configuration."""

    model: str | None
    device: str
    dtype: str
    coefficients: tuple[float, ...] | None
    request: GenerationRequest
    config: BenchConfig
    runs: int
    warmup: int
    load: LoadOptions = field(default_factory=LoadOptions)
    cache: CacheOptions = field(default_factory=CacheOptions)
    coefficients_source: str = "user"  # how the configs label `coefficients` (teacli.bench.configs)


def _isolated_worker(job: IsolatedJob) -> tuple[BenchConfig | None, list[Run], Dropped]:
    """Runs in its own process: load, fit, prepare, warm up, measure; returns the configuration as it ran
    (None when its peer failed), the runs (with outputs) and the peer dropped. The parent logs the lines."""
    from ..generation.preparation import prepare_pipeline
    from ..models.library_logs import quiet_libraries
    from ..models.loading import pick_device, pick_dtype, resolve_preset
    from .peers import PEERS

    quiet_libraries()
    logger.setLevel(logging.ERROR)  # the parent says what was adapted or skipped, once
    preset = resolve_preset(job.model, offline=job.load.offline)
    device = pick_device(job.device)
    pipe = prepare_pipeline(preset, device, pick_dtype(job.dtype, device), job.load)
    make_config = teacache_config_maker(preset, job.coefficients, job.cache, job.coefficients_source)
    runner = ConfigRunner(pipe, make_config, PEERS)
    rows, dropped = _measured_rows(runner, job.request, [job.config], job.runs, job.warmup)
    return (rows[0].config, rows[0].runs, dropped) if rows else (None, [], dropped)


def start_resource_tracker_deaf_to_hangup() -> None:
    """multiprocessing's resource tracker, a helper process in teacli's process group, ignores SIGINT and SIGTERM
    but dies of SIGHUP (a closed terminal), and the one started in its place prints KeyError tracebacks. Start
    it with SIGHUP blocked, which it inherits: teacli itself then stops alone, with its one line."""
    import signal
    from multiprocessing import resource_tracker

    if not hasattr(signal, "pthread_sigmask") or not hasattr(signal, "SIGHUP"):
        resource_tracker.ensure_running()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a SIGHUP held meanwhile reaches teacli now


def run_isolated(jobs: Sequence[IsolatedJob], on_config: Callable[[str], None] = lambda label: None) -> BenchResult:
    """Each configuration in a process of its own (spawned, so nothing is shared), one after another."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rows: list[BenchRow] = []
    dropped: Dropped = []
    context = multiprocessing.get_context("spawn")
    start_resource_tracker_deaf_to_hangup()
    for job in jobs:
        if job.config.method in dict(dropped):  # its peer failed already
            on_config(job.config.name)
            continue
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            config, runs, lost = pool.submit(_isolated_worker, job).result()
        for method, reason in lost:
            logger.warning("skipping %s: %s", method, reason)
        dropped += lost
        if config is not None and any(row.name == config.name for row in rows):
            logger.warning("%s; that row is listed already, so the bench keeps one", config.adaptation or config.name)
        elif config is not None:
            if config.adaptation is not None:
                logger.warning(config.adaptation)
            rows.append(BenchRow(config, runs))
        on_config(job.config.name)
    result = _scored(rows)
    result.dropped = dropped
    return result
