"""Benchmark runs: vanilla, TeaCache and the other caches on one pipeline, measured alike.

Every configuration runs the same request (prompt, seed, steps). Measured runs go round-robin
over the configurations, so drift (thermal, other processes) hits all of them alike; with
`isolate`, each configuration runs in a process of its own instead (teacli.bench.isolated). Quality is
measured against vanilla's output; the ideal speedup says what skipping that many transformer calls could give
at most, so efficiency = speedup / ideal shows what the cache's own overhead costs (teacli.bench.results).

The peers' settings are first fitted to the pipeline and request (`Peer.fit`): a setting the model
cannot take runs adapted, its row named by what ran and one warning line saying so. A peer that fails
(fitting, preparing, applying or running) is dropped with one line and listed under `skipped`; the
rest of the bench goes on.

Over many prompts (`run_prompts_bench`, `teacli bench --prompts`), every configuration runs on every caption
and each picture is scored against its own caption's vanilla picture; a row gives the mean and spread over
captions, and teacli.bench.frontier compares the caches at equal computed calls along their curves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from ..engine.apply import apply_teacache
from ..generation.measure import Run, measure_generation, quality
from ..generation.runner import GenerationRequest
from .configs import TEACACHE, VANILLA, BenchConfig, Dropped, MakeConfig, bench_configs
from .results import BenchResult, BenchRow, PromptsBenchResult, PromptsRow
from .scoring import checker_reading

__all__ = [
    "TEACACHE",
    "VANILLA",
    "BenchConfig",
    "BenchResult",
    "BenchRow",
    "ConfigRunner",
    "PromptsBenchResult",
    "PromptsRow",
    "bench_configs",
    "checker_reading",
    "run_bench",
    "run_prompts_bench",
]

logger = logging.getLogger("teacli")


class ConfigRunner:
    """Runs one configuration on a pipeline: apply its cache, measure one generation, undo."""

    def __init__(self, pipe: Any, make_config: MakeConfig, peers: dict[str, Any] | None = None) -> None:
        self.pipe = pipe
        self.make_config = make_config
        self.peers = peers or {}

    def fit(self, configs: Sequence[BenchConfig], request: GenerationRequest) -> tuple[list[BenchConfig], Dropped]:
        """The peers' settings as they can run on this pipeline and request (Peer.fit), each change logged as
        one warning and recorded on the config; a setting that becomes one already listed runs once; a peer
        whose fit fails is dropped."""
        from .peers import PeerError, peer_errors

        fitted: list[BenchConfig] = []
        dropped: Dropped = []
        labels: set[str] = set()
        for config in configs:
            if config.peer is not None and config.method in dict(dropped):
                continue
            if config.peer is not None:
                peer = self.peers[config.method]
                try:
                    with peer_errors(f"{peer.title} ({config.name})"):
                        setting, note = peer.fit(self.pipe, config.peer, request)
                except PeerError as error:
                    dropped.append((config.method, str(error)))
                    continue
                if setting.label in labels:
                    logger.warning("%s; that row is listed already, so the bench keeps one", note or config.name)
                    continue
                if note is not None:
                    logger.warning(note)
                    config = replace(config, adapted_from=config.name, adaptation=note)
                config = replace(config, name=setting.label, setting=setting.setting, peer=setting)
            labels.add(config.name)
            fitted.append(config)
        return fitted, dropped

    def prepare(self, configs: Sequence[BenchConfig], request: GenerationRequest) -> Dropped:
        """One-time work of the peers before anything is measured (MagCache calibrates its ratios); the
        peers whose preparation failed, with why."""
        from ..generation.runner import generate
        from .peers import PeerError, peer_errors

        dropped: Dropped = []
        for method in dict.fromkeys(c.method for c in configs if c.peer is not None):
            peer = self.peers[method]
            try:
                with peer_errors(f"{peer.title} preparation"):
                    peer.prepare(self.pipe, lambda: generate(self.pipe, request), request.steps)
            except PeerError as error:
                dropped.append((method, str(error)))
        return dropped

    def run(self, config: BenchConfig, request: GenerationRequest) -> Run:
        if config.method == VANILLA:
            return measure_generation(self.pipe, request)
        if config.peer is None:  # teacli's own: TeaCache's rule at a threshold, or a plan
            made = self.make_config(config.thresh) if config.plan is None else self.make_config(None, plan=config.plan)
            handle = apply_teacache(self.pipe, made)
            try:
                stats = handle.stats
                return measure_generation(self.pipe, request, lambda: (stats.computed, len(stats.records)))
            finally:
                handle.remove()
        from .peers import peer_errors

        peer = self.peers[config.method]
        with peer_errors(f"{peer.title} ({config.name})"):  # its hooks fail inside the generation
            undo = peer.apply(self.pipe, config.peer, request.steps)
            try:
                return measure_generation(self.pipe, request)
            finally:
                undo()


def run_bench(
    runner: ConfigRunner,
    request: GenerationRequest,
    configs: Sequence[BenchConfig],
    *,
    runs: int,
    warmup: int,
    on_run: Callable[[str], None] = lambda label: None,
) -> BenchResult:
    """`warmup` unmeasured rounds, then `runs` measured rounds, each over every configuration in turn."""
    rows, dropped = _measured_rows(runner, request, configs, runs, warmup, on_run)
    result = _scored(rows)
    result.dropped = dropped
    return result


def run_bench_groups(
    groups: Iterable[tuple[ConfigRunner, Sequence[BenchConfig]]],
    request: GenerationRequest,
    *,
    runs: int,
    warmup: int,
    on_run: Callable[[str], None] = lambda label: None,
) -> BenchResult:
    """Several pipelines in turn (one per quantization), each group's rows interleaved as run_bench does; every row
    is scored against the first group's vanilla. `groups` is consumed lazily, so a pipeline can be freed before
    the next one loads."""
    rows: list[BenchRow] = []
    dropped: Dropped = []
    pending = iter(groups)
    while (group := next(pending, None)) is not None:
        group_rows, group_dropped = _measured_rows(group[0], request, group[1], runs, warmup, on_run)
        rows += group_rows
        dropped += group_dropped
        del group  # no reference to this pipeline is left when the next one loads
    result = _scored(rows)
    result.dropped = dropped
    return result


def _measured_rows(
    runner: ConfigRunner,
    request: GenerationRequest,
    configs: Sequence[BenchConfig],
    runs: int,
    warmup: int,
    on_run: Callable[[str], None] = lambda label: None,
) -> tuple[list[BenchRow], Dropped]:
    """The rows with their runs (outputs kept), and the peers dropped on the way. Each round starts one
    configuration later than the one before, so no configuration always runs right after the same other
    one (a position in the round can carry its own cost: caches, clocks). A peer that fails is dropped
    with one warning line (its rows go, the bench goes on); on_run still hears of the runs it would have
    made, so a progress bar sized for every configuration ends full."""
    expected = (warmup + runs) * len(configs)
    configs, dropped = _fitted_and_prepared(runner, request, configs)
    failed = dict(dropped)
    rows = [BenchRow(config) for config in configs]
    made = _rounds(runner, request, rows, failed, dropped, runs=runs, warmup=warmup, on_run=on_run)
    for _ in range(expected - made):
        on_run("skipped")
    return [row for row in rows if row.config.method not in failed], dropped


def _fitted_and_prepared(
    runner: ConfigRunner, request: GenerationRequest, configs: Sequence[BenchConfig]
) -> tuple[list[BenchConfig], Dropped]:
    """The configurations as they run on this pipeline (ConfigRunner.fit), their peers prepared for
    `request`; the peers dropped on the way, each said in one warning line."""
    configs, dropped = runner.fit(configs, request)
    dropped += runner.prepare(configs, request)
    for method, reason in dropped:
        logger.warning("skipping %s: %s", method, reason)
    return configs, dropped


def _rounds(
    runner: ConfigRunner,
    request: GenerationRequest,
    rows: list[BenchRow],
    failed: dict[str, str],
    dropped: Dropped,
    *,
    runs: int,
    warmup: int,
    first_shift: int = 0,
    on_run: Callable[[str], None] = lambda label: None,
    on_first: Callable[[Run], None] | None = None,
) -> int:
    """`warmup` unmeasured then `runs` measured rounds over the rows, round i starting at row first_shift + i;
    the measured runs go to their rows. A peer that fails goes into `failed` and `dropped` (one warning line)
    and runs no more. on_first hears of the first run made. Returns how many runs were made."""
    from .peers import PeerError

    made = 0
    for round_index in range(warmup + runs):
        shift = (first_shift + round_index) % len(rows)
        for row in rows[shift:] + rows[:shift]:
            if row.config.method in failed:
                continue
            try:
                run = runner.run(row.config, request)
            except PeerError as error:
                if row.config.peer is None:
                    raise
                failed[row.config.method] = str(error)
                dropped.append((row.config.method, str(error)))
                logger.warning("skipping %s: %s", row.config.method, error)
                continue
            if made == 0 and on_first is not None:
                on_first(run)
            if round_index >= warmup:
                row.runs.append(run)
            made += 1
            on_run(row.name if round_index >= warmup else f"warm-up {row.name}")
    return made


def _scored(rows: list[BenchRow]) -> BenchResult:
    """Quality of each row's first measured output against vanilla's; outputs are then dropped."""
    reference = rows[0].runs[0].output
    for row in rows:
        row.quality = quality(row.runs[0].output, reference)
        row.runs = [replace(run, output=None) for run in row.runs]
    return BenchResult(rows)


def run_prompts_bench(
    runner: ConfigRunner,
    requests: Sequence[GenerationRequest],
    configs: Sequence[BenchConfig],
    *,
    runs: int,
    warmup: int,
    on_run: Callable[[str], None] = lambda label: None,
    on_first: Callable[[Run], None] | None = None,
) -> PromptsBenchResult:
    """Every configuration on every caption (request i: prompt i, seed + i), caption after caption: `warmup`
    unmeasured rounds once, on the first caption, before anything is measured; then for each caption `runs`
    measured rounds as run_bench makes them, the rotation carried on from one caption to the next, so no
    configuration always runs first. Each output is scored against that caption's vanilla output, then
    dropped. The peers are fitted and prepared once, on the first caption (MagCache calibrates its ratios on
    it). on_first hears of the first run (vanilla on the first caption): the CLI checks --at-calls with it."""
    expected = (warmup + runs * len(requests)) * len(configs)
    configs, dropped = _fitted_and_prepared(runner, requests[0], configs)
    failed = dict(dropped)
    rows = [PromptsRow(config) for config in configs]
    made = 0
    for index, request in enumerate(requests):
        caption_rows = [BenchRow(row.config) for row in rows]
        made += _rounds(
            runner,
            request,
            caption_rows,
            failed,
            dropped,
            runs=runs,
            warmup=warmup if index == 0 else 0,
            first_shift=0 if index == 0 else warmup + index * runs,
            on_run=on_run,
            on_first=on_first if index == 0 else None,
        )
        reference = caption_rows[0].runs[0].output
        for row, caption in zip(rows, caption_rows):
            if row.config.method in failed:
                continue
            caption.quality = quality(caption.runs[0].output, reference)
            caption.checker = checker_reading(request.prompt, caption.runs[0].output)
            caption.runs = [replace(run, output=None, outputs=[]) for run in caption.runs]
            row.captions.append(caption)
    for _ in range(expected - made):
        on_run("skipped")
    return PromptsBenchResult([row for row in rows if row.config.method not in failed], list(requests), dropped=dropped)
