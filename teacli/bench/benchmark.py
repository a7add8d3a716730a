"""Benchmark runs: vanilla, TeaCache and the other caches on one pipeline, measured alike.

Every configuration runs the same request (prompt, seed, steps). Measured runs go round-robin
over the configurations, so drift (thermal, other processes) hits all of them alike; with
`isolate`, each configuration runs in a process of its own instead. Quality is measured against
vanilla's output; the ideal speedup says what skipping that many transformer calls could give at
most, so efficiency = speedup / ideal shows what the cache's own overhead costs.

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
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..engine.hook import TeaCacheConfig, apply_teacache
from ..generation.measure import Quality, Run, measure_generation, median, quality
from ..generation.preparation import CacheOptions, LoadOptions
from ..generation.runner import GenerationRequest

# A threshold (or, by keyword, a plan) -> the config for apply_teacache (one per denoiser for two-expert pipelines).
MakeConfig = Callable[..., TeaCacheConfig | dict[str, TeaCacheConfig]]
VANILLA, TEACACHE = "vanilla", "teacache"
Dropped = list[tuple[str, str]]  # (peer method, the one line saying why it did not run)

logger = logging.getLogger("teacli")


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


@dataclass
class BenchRow:
    config: BenchConfig
    runs: list[Run] = field(default_factory=list)
    quality: Quality = Quality(None, None)
    # The teacli-shapes checker's reading of the picture against its caption: (background, colour, shape)
    # right or wrong; None when the prompt is not a caption of its grammar (any other model or prompt).
    checker: tuple[bool, bool, bool] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def seconds(self) -> list[float]:
        return [run.seconds for run in self.runs]

    @property
    def median(self) -> float:
        return median(self.seconds)

    @property
    def spread(self) -> float:
        return max(self.seconds) - min(self.seconds)

    @property
    def computed(self) -> int:
        return self.runs[0].computed

    @property
    def total(self) -> int:
        return self.runs[0].total

    @property
    def peak_memory_bytes(self) -> int | None:
        peaks = [run.peak_memory_bytes for run in self.runs if run.peak_memory_bytes is not None]
        return max(peaks) if peaks else None

    @property
    def transformer_share(self) -> float:
        """The share of the generation spent inside transformer calls (median over runs)."""
        return median([run.transformer_seconds / run.seconds for run in self.runs if run.seconds > 0])

    @property
    def seconds_per_call(self) -> float:
        return median([run.transformer_seconds / run.total for run in self.runs if run.total])


@dataclass
class BenchResult:
    rows: list[BenchRow]  # vanilla first
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (method, why it did not run)
    dropped: Dropped = field(default_factory=list)  # peers that failed during the bench; to_dict lists them skipped

    @property
    def vanilla(self) -> BenchRow:
        return self.rows[0]

    def speedup(self, row: BenchRow) -> float:
        return self.vanilla.median / row.median

    def ideal_speedup(self, row: BenchRow) -> float:
        """vanilla seconds / (vanilla seconds - cached calls x vanilla's mean seconds per transformer call):
        the speedup if skipping a call cost nothing and saved a whole call."""
        saved = (row.total - row.computed) * self.vanilla.seconds_per_call
        remaining = self.vanilla.median - saved
        return self.vanilla.median / remaining if remaining > 0 else float("inf")

    def efficiency(self, row: BenchRow) -> float:
        return self.speedup(row) / self.ideal_speedup(row)

    def extra_memory_bytes(self, row: BenchRow) -> int | None:
        ours, theirs = row.peak_memory_bytes, self.vanilla.peak_memory_bytes
        return None if ours is None or theirs is None else ours - theirs

    def row_dict(self, row: BenchRow) -> dict[str, Any]:
        return {
            "name": row.name,
            "method": row.config.method,
            "setting": row.config.setting,
            "computed": row.computed,
            "cached": row.total - row.computed,
            "total": row.total,
            "seconds": row.seconds,
            "seconds_median": row.median,
            "seconds_spread": row.spread,
            "speedup": self.speedup(row),
            "ideal_speedup": self.ideal_speedup(row),
            "efficiency": self.efficiency(row),
            "psnr": row.quality.psnr_capped,
            "psnr_capped": row.quality.identical,  # identical to vanilla: PSNR is infinite, written as the cap
            "ssim": row.quality.ssim,
            "peak_memory_bytes": row.peak_memory_bytes,
            "extra_memory_bytes": self.extra_memory_bytes(row),
            "adapted_from": row.config.adapted_from,
            "adaptation": row.config.adaptation,
        }

    def to_dict(self, **header: Any) -> dict[str, Any]:
        from ..generation.measure import PSNR_CAP

        return {
            **header,
            "transformer_share": self.vanilla.transformer_share,
            "vanilla_seconds_per_transformer_call": self.vanilla.seconds_per_call,
            "psnr_cap": PSNR_CAP,
            "rows": [self.row_dict(row) for row in self.rows],
            "skipped": [{"method": method, "reason": reason} for method, reason in [*self.skipped, *self.dropped]],
        }


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


# ---------------------------------------------------------------------------------------------------------
# many prompts: every configuration on every caption, compared at equal computed calls (teacli.bench.frontier)


@dataclass
class PromptsRow:
    """One configuration over every caption: per caption a BenchRow (its runs, its quality against that
    caption's own vanilla output), in caption order."""

    config: BenchConfig
    captions: list[BenchRow] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def computed(self) -> float:
        """Mean computed transformer calls per picture."""
        return statistics.fmean(row.computed for row in self.captions)

    @property
    def total(self) -> int:
        return self.captions[0].total

    @property
    def seconds(self) -> float:
        """Mean over captions of each caption's median seconds."""
        return statistics.fmean(row.median for row in self.captions)

    @property
    def seconds_per_call(self) -> float:
        return statistics.fmean(row.seconds_per_call for row in self.captions)

    @property
    def transformer_share(self) -> float:
        return statistics.fmean(row.transformer_share for row in self.captions)

    @property
    def peak_memory_bytes(self) -> int | None:
        peaks = [peak for row in self.captions if (peak := row.peak_memory_bytes) is not None]
        return max(peaks) if peaks else None

    @property
    def checker(self) -> dict[str, float] | None:
        """Percent of pictures whose background, shape colour and shape the checker reads as captioned, and
        all three at once; None unless every caption was read."""
        readings = [row.checker for row in self.captions]
        if not readings or any(reading is None for reading in readings):
            return None
        percent = lambda hits: round(100.0 * sum(hits) / len(readings), 1)  # noqa: E731
        return {
            "background": percent(r[0] for r in readings),
            "color": percent(r[1] for r in readings),
            "shape": percent(r[2] for r in readings),
            "all": percent(all(r) for r in readings),
        }

    def values(self, measure: str) -> list[float]:
        """Per caption PSNR (identical outputs at PSNR_CAP) or SSIM, the captions that have one."""
        found = [row.quality.psnr_capped if measure == "psnr" else row.quality.ssim for row in self.captions]
        return [value for value in found if value is not None]


@dataclass
class PromptsBenchResult:
    rows: list[PromptsRow]  # vanilla first
    requests: list[GenerationRequest]  # caption i: its prompt, seed + i
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped: Dropped = field(default_factory=list)

    @property
    def vanilla(self) -> PromptsRow:
        return self.rows[0]

    @property
    def calls_per_picture(self) -> int:
        return self.vanilla.total

    def speedup(self, row: PromptsRow) -> float:
        return self.vanilla.seconds / row.seconds

    def ideal_speedup(self, row: PromptsRow) -> float:
        """As BenchResult.ideal_speedup, with mean seconds and mean cached calls over the captions."""
        saved = (row.total - row.computed) * self.vanilla.seconds_per_call
        remaining = self.vanilla.seconds - saved
        return self.vanilla.seconds / remaining if remaining > 0 else float("inf")

    def efficiency(self, row: PromptsRow) -> float:
        return self.speedup(row) / self.ideal_speedup(row)

    def extra_memory_bytes(self, row: PromptsRow) -> int | None:
        ours, theirs = row.peak_memory_bytes, self.vanilla.peak_memory_bytes
        return None if ours is None or theirs is None else ours - theirs

    def row_dict(self, row: PromptsRow) -> dict[str, Any]:
        from .frontier import summary

        calls = summary([caption.computed for caption in row.captions])
        psnr, ssim = summary(row.values("psnr")), summary(row.values("ssim"))
        identical = sum(caption.quality.identical for caption in row.captions)
        return {
            "name": row.name,
            "method": row.config.method,
            "setting": row.config.setting,
            "computed": calls["mean"],
            "computed_min": calls["min"],
            "computed_max": calls["max"],
            "cached": row.total - calls["mean"],
            "total": row.total,
            "seconds": [caption.median for caption in row.captions],
            "seconds_mean": row.seconds,
            "relative_seconds": row.seconds / self.vanilla.seconds,
            "speedup": self.speedup(row),
            "ideal_speedup": self.ideal_speedup(row),
            "efficiency": self.efficiency(row),
            "psnr": psnr["mean"],
            "psnr_std": psnr["std"],
            "psnr_min": psnr["min"],
            "psnr_max": psnr["max"],
            "psnr_capped": bool(row.captions) and identical == len(row.captions),
            "identical_captions": identical,
            "ssim": ssim["mean"],
            "ssim_std": ssim["std"],
            "ssim_min": ssim["min"],
            "ssim_max": ssim["max"],
            "checker": row.checker,
            "peak_memory_bytes": row.peak_memory_bytes,
            "extra_memory_bytes": self.extra_memory_bytes(row),
            "adapted_from": row.config.adapted_from,
            "adaptation": row.config.adaptation,
            "per_caption": [
                {
                    "caption": index,
                    "seed": request.seed,
                    "computed": caption.computed,
                    "total": caption.total,
                    "seconds": caption.seconds,
                    "seconds_median": caption.median,
                    "psnr": caption.quality.psnr_capped,
                    "psnr_capped": caption.quality.identical,
                    "ssim": caption.quality.ssim,
                }
                for index, (caption, request) in enumerate(zip(row.captions, self.requests))
            ],
        }

    def to_dict(self, at_calls: Sequence[float] = (), **header: Any) -> dict[str, Any]:
        from ..generation.measure import PSNR_CAP
        from .frontier import frontier_rows

        rows = [self.row_dict(row) for row in self.rows]
        return {
            **header,
            "prompts": [{"prompt": request.prompt, "seed": request.seed} for request in self.requests],
            "calls_per_picture": self.calls_per_picture,
            "transformer_share": self.vanilla.transformer_share,
            "vanilla_seconds_per_transformer_call": self.vanilla.seconds_per_call,
            "psnr_cap": PSNR_CAP,
            "rows": rows,
            "at_calls": list(at_calls),
            "frontier": frontier_rows(rows, at_calls),
            "skipped": [{"method": method, "reason": reason} for method, reason in [*self.skipped, *self.dropped]],
        }


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


def checker_reading(prompt: str, output: Any) -> tuple[bool, bool, bool] | None:
    """The teacli-shapes checker's verdict on a picture of a caption from its grammar: whether it reads the
    captioned background, shape colour and shape. None for other prompts or outputs (not a picture)."""
    from PIL import Image

    from ..demo.checker import read
    from ..demo.shapes import parse_caption

    if not isinstance(output, Image.Image):
        return None
    try:
        caption = parse_caption(prompt)
    except (ValueError, IndexError):
        return None
    reading = read(output.convert("RGB"))
    return reading.background == caption.background, reading.color == caption.color, reading.shape == caption.shape


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


def _isolated_worker(job: IsolatedJob) -> tuple[BenchConfig | None, list[Run], Dropped]:
    """Runs in its own process: load, fit, prepare, warm up, measure; returns the configuration as it ran
    (None when its peer failed), the runs (with outputs) and the peer dropped. The parent logs the lines."""
    from ..cli._app import quiet_libraries
    from ..generation.preparation import prepare_pipeline
    from ..models.loading import pick_device, pick_dtype, resolve_preset, teacache_configs
    from .peers import PEERS

    quiet_libraries()
    logger.setLevel(logging.ERROR)  # the parent says what was adapted or skipped, once
    preset = resolve_preset(job.model, offline=job.load.offline)
    device = pick_device(job.device)
    pipe = prepare_pipeline(preset, device, pick_dtype(job.dtype, device), job.load)
    runner = ConfigRunner(
        pipe,
        lambda thresh, plan=None: job.cache.apply(
            teacache_configs(preset, thresh, coefficients=job.coefficients, coefficients_source="user", plan=plan)
        ),
        PEERS,
    )
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
