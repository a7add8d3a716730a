"""The whole of `teacli bench` as one library call: `run_benchmark(BenchSpec) -> BenchReport`, the spec made from
what a user asks by `bench_spec(model, prompts, thresholds, ...)`.

The spec says what to compare (thresholds, budget policies, peers) on which requests (one prompt, or many:
every configuration on every caption); `run_benchmark` loads the model, drops the peers that cannot run on
it, builds the rows and runs them one way: interleaved on one prompt (`run_bench`), interleaved over many
(`run_prompts_bench`), or each configuration in a process of its own (`run_isolated`). The report carries the
result, its JSON and the titles a renderer prints above it. Progress comes back through `BenchProgress`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from ..generation.preparation import CacheOptions, LoadOptions
from ..generation.progress import Progress
from ..generation.runner import GenerationRequest
from ..models.catalog import Preset
from ..settings import SETTINGS
from .configs import BenchConfig, Dropped, bench_configs, quantized, teacache_config_maker
from .options import check_at_calls, check_quantizations
from .results import BenchResult, PromptsBenchResult

OnRun = Callable[[str], None]  # hears of each run made, with the row's label


@contextmanager
def _silent_bar(description: str, total: int) -> Iterator[OnRun]:
    yield lambda label: None


@contextmanager
def _silent_loading(model: str) -> Iterator[None]:
    yield


@dataclass(frozen=True)
class BenchProgress:
    """What a bench tells its caller while it runs (the CLI draws these; a script may ignore them)."""

    loading: Callable[[str], AbstractContextManager[None]] = _silent_loading  # around loading the model
    bar: Callable[[str, int], AbstractContextManager[OnRun]] = _silent_bar  # (description, runs to make)
    skipping: Callable[[str, str], None] = lambda method, reason: None  # a peer that cannot run on this pipeline


@dataclass(frozen=True)
class BenchSpec:
    """Everything one bench needs, checked by its maker: what to compare, on which requests, and how."""

    preset: Preset
    requests: Sequence[GenerationRequest]  # over_prompts: caption i with its seed; else the one request
    thresholds: Sequence[float]
    policies: Sequence[Any] = ()  # teacli.generation.policy.Policy rows (teacache-plan@K, teacache-uniform@K)
    methods: Sequence[str] = ()  # peers to run beside TeaCache (teacli.bench.peers.PEERS names)
    over_prompts: bool = False  # every configuration on every request, compared at equal computed calls
    at_calls: Sequence[float] = ()  # with over_prompts: the computed calls per picture to compare at
    sweep: bool = False  # the peers across their wide settings, to draw curves
    runs: int = 3
    warmup: int = 1
    isolate: bool = False  # each configuration in a process of its own (one request only)
    model: str | None = None  # as the user named it: an isolated process resolves it again
    device: str = "auto"
    dtype: str = "auto"
    coefficients: tuple[float, ...] | None = None  # the user's, for every denoiser
    coefficients_source: str = "user"  # how reports label the user's coefficients
    load: LoadOptions = field(default_factory=LoadOptions)
    cache: CacheOptions = field(default_factory=CacheOptions)
    prompts_file: str | None = None  # recorded in the JSON of a bench over prompts
    # Several: every row on the pipeline quantized each way in turn (None: unquantized), all scored and timed
    # against the first one's vanilla; `load.quantize` is then unused.
    quantizations: Sequence[str | None] = ()


@dataclass
class BenchReport:
    spec: BenchSpec
    result: BenchResult | PromptsBenchResult
    device: str  # where it ran, as torch names it

    @property
    def request(self) -> GenerationRequest:
        return self.spec.requests[0]

    @property
    def coefficients_source(self) -> str:
        given = self.spec.coefficients is not None
        return self.spec.coefficients_source if given else self.spec.preset.coefficients_source

    def to_dict(self) -> dict[str, Any]:
        spec = self.spec
        header = dict(
            model=spec.preset.name,
            steps=self.request.steps,
            device=self.device,
            runs=spec.runs,
            warmup=spec.warmup,
            isolated=spec.isolate,
            coefficients_source=self.coefficients_source,
            **({"coefficients": list(spec.coefficients)} if spec.coefficients is not None else {}),
            settings={**spec.cache.given(), **spec.load.to_dict()},
            **({"quantizations": list(spec.quantizations)} if len(spec.quantizations) > 1 else {}),
        )
        if not spec.over_prompts:
            return self.result.to_dict(**header)
        return self.result.to_dict(
            at_calls=list(spec.at_calls), **header, prompts_file=spec.prompts_file, sweep=spec.sweep
        )

    @property
    def title(self) -> str:
        spec, steps = self.spec, self.request.steps
        share = self.result.vanilla.transformer_share
        tail = (
            f"device {self.device}; transformer {share:.0%} of vanilla's time; coefficients: {self.coefficients_source}"
        )
        if len(spec.quantizations) > 1:
            tail += "; quantized: " + ", ".join(q or "none" for q in spec.quantizations) + " (against the first)"
        if not spec.over_prompts:
            way = "isolated" if spec.isolate else "interleaved"
            return f"bench {spec.preset.name}: {steps} steps, {spec.runs} runs, warm-up {spec.warmup}, {way}, {tail}"
        count, seed = len(spec.requests), self.request.seed
        seeds = f"seed {seed}" if count == 1 else f"seeds {seed}-{seed + count - 1}"
        return (
            f"bench {spec.preset.name}: {count} prompt{_s(count)} ({seeds}), {steps} steps, "
            f"{self.result.calls_per_picture} transformer calls per picture, {spec.runs} run{_s(spec.runs)} per "
            f"prompt, warm-up {spec.warmup}, interleaved, {tail}"
        )

    @property
    def frontier_title(self) -> str:
        count = len(self.spec.requests)
        return (
            f"frontier: PSNR dB / SSIM at equal computed calls of {self.result.calls_per_picture} per picture, mean "
            f"over {count} prompt{_s(count)}, interpolated along each cache's curve ({self.spec.preset.name}, "
            f"{self.request.steps} steps)"
        )


def _s(count: int) -> str:
    return "s" if count > 1 else ""


BENCH_OWN_SETTINGS = ("seed", "image", "num_images")  # set by bench itself, not from `settings`


def bench_spec(
    model: str | None,
    prompts: Sequence[str],
    thresholds: Sequence[float],
    *,
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
    image: Any = None,
    methods: Sequence[str] | None = None,
    budgets: Sequence[str] = (),
    policy: str = "auto",
    at_calls: Sequence[float] | None = None,
    over_prompts: bool = False,
    sweep: bool = False,
    runs: int | None = None,
    strict: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> BenchSpec:
    """The BenchSpec for what a user asks, made before anything loads: `model` resolved (offline where
    `load.offline`); request i is prompt i with seed + i and `settings` (teacli.settings rows), the preset's
    defaults where one is None or missing; what the pipeline cannot take refused, and what makes caching
    useless told to `progress` as a warning (refused when `strict`). `methods`: the peers to run beside TeaCache
    (bench.peers.PEERS names; None: all). A sweep with no `budgets` gets every budget the preset has a plan for;
    `at_calls` implies over_prompts and a sweep; runs default to 3, 1 over prompts. `options`: BenchSpec's other
    fields."""
    from ..generation.checks import check_settings, schedule_warning, thresh_warning
    from ..generation.session import check_pipeline_takes, input_image, resolve
    from .peers import parse_against

    methods = parse_against(None if methods is None else ",".join(methods) or "none")  # known names, PEERS order
    over_prompts, sweep = over_prompts or at_calls is not None, sweep or at_calls is not None
    load = options.get("load") or LoadOptions()
    check_quantizations(options.get("quantizations", ()), over_prompts, options.get("isolate", False))
    preset = resolve(model, offline=load.offline)
    # Every generation setting but the seed (one per prompt), the image and batches (one output per run).
    asked = {row.name: (settings or {}).get(row.name) for row in SETTINGS if row.name not in BENCH_OWN_SETTINGS}
    check_pipeline_takes(preset, **asked, image=image)
    first = GenerationRequest.from_preset(preset, prompts[0], seed=seed, image=input_image(preset, image), **asked)
    warnings = [schedule_warning(first.steps), *(thresh_warning(t, preset) for t in thresholds)]
    check_settings(warnings, strict, progress or Progress())
    requests = [replace(first, prompt=text, seed=seed + index) for index, text in enumerate(prompts)]
    budgets = budgets or (sweep_budgets(preset, first.steps) if sweep else [])
    return BenchSpec(
        preset, requests, thresholds, budget_policies(preset, first.steps, policy, budgets), methods,
        over_prompts=over_prompts, at_calls=at_calls or [], sweep=sweep,
        runs=runs if runs is not None else 1 if over_prompts else 3, model=model, **options,
    )  # fmt: skip


def run_benchmark(spec: BenchSpec, progress: BenchProgress = BenchProgress()) -> BenchReport:
    """Load the model, drop the peers that cannot run on it, and measure every configuration (see the module
    docstring); quiet teacli's own per-run lines with logging if they would bury a progress bar."""
    from ..generation.preparation import prepare_pipeline
    from ..models.loading import pick_device, pick_dtype
    from ..models.memory import check_on_device

    device = pick_device(spec.device)
    for quantize in spec.quantizations or (spec.load.quantize,):  # before "loading" is said
        check_on_device(spec.load.offload, quantize, device)
    if len(spec.quantizations) > 1:
        return _across_quantizations(spec, device, progress)
    with progress.loading(spec.preset.name):
        pipe = prepare_pipeline(spec.preset, device, pick_dtype(spec.dtype, device), spec.load)
    configs, skipped = _runnable_configs(spec, pipe, progress)
    if spec.isolate:
        del pipe  # each configuration loads its own copy
        result = _isolated(spec, configs, progress)
    else:
        result = _interleaved(spec, pipe, configs, progress)
        device = pipe.device
    result.skipped = skipped
    return BenchReport(spec, result, str(device))


def _runnable_configs(spec: BenchSpec, pipe: Any, progress: BenchProgress) -> tuple[list[BenchConfig], Dropped]:
    """The rows for this pipeline: the peers that cannot run on it dropped (each told to `progress`)."""
    from .peers import PEERS

    skipped = [(name, reason) for name in spec.methods if (reason := PEERS[name].unavailable(pipe))]
    for name, reason in skipped:
        progress.skipping(name, reason)
    steps = spec.requests[0].steps
    settings = [
        s for name in spec.methods if name not in dict(skipped) for s in PEERS[name].settings(steps, wide=spec.sweep)
    ]
    return bench_configs(spec.thresholds, settings, spec.policies), skipped


def _across_quantizations(spec: BenchSpec, device: Any, progress: BenchProgress) -> BenchReport:
    """Every row on each quantization of the model in turn, one pipeline loaded at a time (freed before the next
    loads), scored and timed against the first quantization's vanilla."""
    from ..generation.preparation import prepare_pipeline
    from ..models.loading import pick_dtype
    from .benchmark import ConfigRunner, run_bench_groups
    from .peers import PEERS

    make_config = teacache_config_maker(spec.preset, spec.coefficients, spec.cache, spec.coefficients_source)
    skipped: Dropped = []

    def groups() -> Iterator[tuple[Any, list[BenchConfig]]]:
        for quantize in spec.quantizations:
            with progress.loading(f"{spec.preset.name} ({quantize or 'not quantized'})"):
                load = replace(spec.load, quantize=quantize)
                pipe = prepare_pipeline(spec.preset, device, pick_dtype(spec.dtype, device), load)
            configs, unavailable = _runnable_configs(spec, pipe, progress)
            skipped.extend(item for item in unavailable if item not in skipped)
            yield ConfigRunner(pipe, make_config, PEERS), quantized(configs, quantize)
            del pipe
            free_memory(device)

    steps = spec.requests[0].steps
    every_peer = [s for name in spec.methods for s in PEERS[name].settings(steps, wide=spec.sweep)]
    rows = len(bench_configs(spec.thresholds, every_peer, spec.policies)) * len(spec.quantizations)
    with progress.bar("bench", (spec.warmup + spec.runs) * rows) as on_run:
        result = run_bench_groups(groups(), spec.requests[0], runs=spec.runs, warmup=spec.warmup, on_run=on_run)
    result.skipped = skipped
    return BenchReport(spec, result, str(device))


def free_memory(device: Any) -> None:
    """What a freed pipeline held, given back before the next one loads."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _interleaved(
    spec: BenchSpec, pipe: Any, configs: list[BenchConfig], progress: BenchProgress
) -> BenchResult | PromptsBenchResult:
    from .benchmark import ConfigRunner, run_bench, run_prompts_bench
    from .peers import PEERS

    make_config = teacache_config_maker(spec.preset, spec.coefficients, spec.cache, spec.coefficients_source)
    runner = ConfigRunner(pipe, make_config, PEERS)
    rounds = spec.runs * (len(spec.requests) if spec.over_prompts else 1)
    with progress.bar("bench", (spec.warmup + rounds) * len(configs)) as on_run:
        if not spec.over_prompts:
            return run_bench(runner, spec.requests[0], configs, runs=spec.runs, warmup=spec.warmup, on_run=on_run)
        return run_prompts_bench(
            runner,
            spec.requests,
            configs,
            runs=spec.runs,
            warmup=spec.warmup,
            on_run=on_run,
            on_first=lambda run: check_at_calls(spec.at_calls, run.total, spec.requests[0].steps),
        )


def _isolated(spec: BenchSpec, configs: list[BenchConfig], progress: BenchProgress) -> BenchResult:
    from .isolated import IsolatedJob, run_isolated

    request = spec.requests[0]
    jobs = [
        IsolatedJob(
            spec.model, spec.device, spec.dtype, spec.coefficients, request, config, spec.runs, spec.warmup,
            spec.load, spec.cache, spec.coefficients_source,
        )
        for config in configs
    ]  # fmt: skip
    with progress.bar("bench (isolated)", len(jobs)) as on_run:
        return run_isolated(jobs, on_config=lambda label: on_run("bench (isolated)"))


def sweep_budgets(preset: Preset, steps: int) -> list[str]:
    """With a sweep and no budgets asked: every budget the preset has a plan for at `steps`, from 3 to 60% of them."""
    return [str(budget) for budget in sorted(preset.plans.get(steps, {})) if 3 <= budget <= 0.6 * steps]


def budget_policies(preset: Preset, steps: int, policy: str, budgets: Sequence[str]) -> list[Any]:
    """A policy row per budget (teacli.generation.policy.choose_policy), one per label."""
    from ..generation.policy import choose_policy

    chosen = (choose_policy(preset, steps, policy=policy, budget=text) for text in budgets)
    return list({p.label: p for p in chosen if p}.values())
