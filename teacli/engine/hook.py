"""TeaCache on diffusers' hook system: a config, a per-branch state, the hook, and apply/remove.

TeaCache (arXiv 2411.19108) skips the transformer blocks on calls whose modulated input barely
moved since the last computed one, adding the cached block residual instead. The hook replaces the
transformer's forward through `HookRegistry`; an extractor (see teacli.extractors) supplies every
model-specific piece, so nothing here names a model.
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from diffusers.hooks.hooks import BaseState, HookRegistry, ModelHook, StateManager
from diffusers.utils.torch_utils import unwrap_module

from ..errors import TeacliError
from ..limits import LIMITS, short
from .context import CacheContext
from .decision import Decision, Verdict, decide, rel_l1, rel_l1_from_terms, rel_l1_terms
from .plan import Plan
from .registry import Extractor, get_extractor
from .stats import StepRecord, TeaCacheStats

logger = logging.getLogger("teacli")

TEACACHE_HOOK = "teacli_teacache"
DEFAULT_BRANCH = "default"
# Pipeline components that hold a denoiser; two-expert pipelines (Wan 2.2) have both.
DENOISER_COMPONENTS = ("transformer", "transformer_2")

# diffusers' step caches, by the names their apply_* functions register hooks under and by hook class,
# so one applied directly (not through enable_cache) is found too, on the transformer or any submodule.
_DIFFUSERS_CACHES = {
    "FirstBlockCache": ("fbc_leader_block_hook", "fbc_block_hook", "FBCHeadBlockHook", "FBCBlockHook"),
    "MagCache": ("mag_cache_leader_block_hook", "mag_cache_block_hook", "MagCacheHeadHook", "MagCacheBlockHook"),
    "FasterCache": ("faster_cache_denoiser", "faster_cache_block", "FasterCacheDenoiserHook", "FasterCacheBlockHook"),
    "PyramidAttentionBroadcast": ("pyramid_attention_broadcast", "PyramidAttentionBroadcastHook"),
    "TaylorSeerCache": ("taylorseer_cache", "TaylorSeerCacheHook"),
    "SeaCache": (
        "sea_cache_root",
        "sea_cache_leader_block",
        "sea_cache_block",
        "sea_cache_post_norm",
        "SeaCacheRootHook",
        "SeaCacheLeaderBlockHook",
        "SeaCacheBlockHook",
        "SeaCachePostNormHook",
    ),
}
_CACHE_BY_MARK = {mark: cache for cache, marks in _DIFFUSERS_CACHES.items() for mark in marks}


class TeaCacheError(TeacliError, ValueError):
    """A TeaCache setup the user can fix: the message says what was wrong and what to do."""


@dataclass
class TeaCacheConfig:
    """How TeaCache decides.

    Args:
        thresh: reuse the cached residual while the accumulated rescaled distance stays below this.
            0 computes every call. Published sweet spots are 0.1-0.6 depending on the model.
        coefficients: the rescaling polynomial, highest power first (numpy.poly1d order).
        ret_steps: force the first N steps of every generation (some references warm up longer).
        cutoff_steps: force every step from this index on (None: only the last step is forced).
        num_inference_steps: the number of steps, only needed on a bare transformer with no
            scheduler to read it from, so the last step can be forced.
        rel_l1_range: the calibrated range of rel_l1; inputs are clamped to it before rescaling.
        coefficients_source: where the coefficients come from, for logs and reports.
        modulated_input: measure the decision on this named alternative the extractor offers
            (CacheContext.modulated_alternatives) instead of its default modulated input.
        record_output_change: also record the rel_l1 of the blocks' output (the first stream
            `run_transformer_blocks` returns) between consecutive computed calls of a branch: the y
            that `teacli calibrate` fits against rel_l1. Keeps one more tensor per branch.
        start, end: the cache window as fractions of the schedule: only steps i with
            start * total <= i < end * total may be cached, every other step is computed (forced).
        max_cached_in_row: never reuse more than this many consecutive calls of a branch; the next
            call that would be cached is computed (forced) instead. None: no limit.
        cache_device: where cached residuals are kept (None: on the device of the streams). "cpu"
            keeps them in host memory; a cached call copies them back before adding them.
        sync_decisions: make every rank of a context-parallel run take the same decision by summing
            rel_l1's numerator and denominator over the ranks (one all-reduce per call) before deciding.
            "auto": when torch.distributed is initialized and the transformer has diffusers' context
            parallelism enabled (over its sequence-shard group); True: over that group, else over the
            default (world) group; False: never. Each rank still caches its own shard's residual.
        plan: a planned schedule (teacli.engine.plan.Plan): compute exactly its steps, reuse or forecast the residual
            on the others, measure nothing. thresh, coefficients and the rel_l1 fields are then unused.
    """

    thresh: float = 0.2
    coefficients: Sequence[float] = field(default_factory=list)
    ret_steps: int = 0
    cutoff_steps: int | None = None
    num_inference_steps: int | None = None
    rel_l1_range: tuple[float, float] | None = None
    coefficients_source: str = "user"
    modulated_input: str | None = None  # an extractor's named alternative (Wan: "time_projection")
    record_output_change: bool = False
    start: float = 0.0
    end: float = 1.0
    max_cached_in_row: int | None = None
    cache_device: str | torch.device | None = None
    sync_decisions: bool | str = "auto"
    plan: Plan | None = None

    def __post_init__(self) -> None:
        # Every field is checked for what the API can be handed: numpy scalars pass as numbers, bools do not,
        # and neither does NaN, an integer too large for a float, a string where a list belongs, ... Values are
        # stored as plain Python ones, so replace() re-checks them unchanged.
        thresh = _real(self.thresh)
        if thresh is None:
            raise TeaCacheError(f"thresh must be a number, got {short(self.thresh)}")
        if not math.isfinite(thresh) or thresh < 0:
            raise TeaCacheError(
                f"thresh must be a finite number >= 0 (0 computes every step), got {short(self.thresh)}"
            )
        self.thresh = thresh
        if self.plan is not None and not isinstance(self.plan, Plan):
            raise TeaCacheError(f"plan must be a teacli.engine.plan.Plan or None, got {short(self.plan)}")
        if self.plan is not None and (
            self.coefficients is None or (isinstance(self.coefficients, (list, tuple)) and not self.coefficients)
        ):
            self.coefficients = []  # a plan decides without them
        else:
            self.coefficients = _coefficient_list(self.coefficients)
        for name in ("ret_steps", "cutoff_steps", "num_inference_steps"):
            value = getattr(self, name)
            if value is None and name != "ret_steps":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise TeaCacheError(f"{name} must be a non-negative integer, got {short(value)}")
            most = int(LIMITS["steps"].high)
            if value > most:
                raise TeaCacheError(f"{name} must be at most {most} (a step of the schedule), got {short(value)}")
            setattr(self, name, int(value))
        if self.rel_l1_range is not None:
            low, high = _range_bounds(self.rel_l1_range)
            if not low <= high:
                raise TeaCacheError(
                    f"rel_l1_range must be (low, high) with low <= high, got {short(self.rel_l1_range)}"
                )
            self.rel_l1_range = (low, high)
        if not isinstance(self.coefficients_source, str):
            raise TeaCacheError(
                f"coefficients_source must be a string (where the coefficients come from), got "
                f"{short(self.coefficients_source)}"
            )
        if self.modulated_input is not None and not isinstance(self.modulated_input, str):
            raise TeaCacheError(
                f"modulated_input must be None or the name of an extractor's alternative, got "
                f"{short(self.modulated_input)}"
            )
        record = _flag(self.record_output_change)
        if record is None:
            raise TeaCacheError(f"record_output_change must be True or False, got {short(self.record_output_change)}")
        self.record_output_change = record
        for name in ("start", "end"):
            value = _real(getattr(self, name))
            if value is None or not math.isfinite(value):
                raise TeaCacheError(
                    f"{name} must be a fraction of the schedule between 0 and 1, got {short(getattr(self, name))}"
                )
            setattr(self, name, value)
        if not 0.0 <= self.start < self.end <= 1.0:
            raise TeaCacheError(
                f"the cache window needs 0 <= start < end <= 1 (fractions of the schedule), "
                f"got start={self.start:g}, end={self.end:g}"
            )
        limit = self.max_cached_in_row
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1):
            hint = "; to compute every step use thresh 0" if isinstance(limit, numbers.Integral) and limit == 0 else ""
            raise TeaCacheError(f"max_cached_in_row must be an integer >= 1 or None, got {short(limit)}{hint}")
        if limit is not None:
            self.max_cached_in_row = int(limit)
        if self.cache_device is not None:
            device = None
            if isinstance(self.cache_device, (str, torch.device)) or (
                isinstance(self.cache_device, numbers.Integral) and not isinstance(self.cache_device, bool)
            ):
                try:
                    device = torch.device(self.cache_device)
                except (RuntimeError, TypeError, ValueError):
                    pass
            if device is None:
                raise TeaCacheError(
                    f"cache_device {short(self.cache_device)} is not a torch device; give e.g. 'cpu' or 'cuda:0'"
                )
            if device.type == "meta":
                raise TeaCacheError(
                    "cache_device 'meta' cannot hold residuals (a meta tensor has no values); use 'cpu' or a GPU"
                )
            self.cache_device = device
        sync = self.sync_decisions if isinstance(self.sync_decisions, str) else _flag(self.sync_decisions)
        if sync != "auto" and not isinstance(sync, bool):
            raise TeaCacheError(f"sync_decisions must be 'auto', True or False, got {short(self.sync_decisions)}")
        self.sync_decisions = sync

    @property
    def has_window(self) -> bool:
        """A cache window narrower than the whole schedule was set."""
        return self.start > 0.0 or self.end < 1.0

    def cache_window(self, total: int) -> range:
        """The steps of a `total`-step schedule that may be cached (before the first/last-step rule)."""
        # Rounded first so that e.g. 0.3 * 10 = 3.0000000000000004 still lets step 3 in.
        return range(math.ceil(round(self.start * total, 9)), math.ceil(round(self.end * total, 9)))


def _real(value: Any) -> float | None:
    """A real number as a float (inf for an integer too large for one); None for anything else, bools included.

    numpy scalars and one-element tensors are numbers; True is not one, even though Python counts it as 1.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and (value.is_floating_point() or _integer_dtype(value)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _integer_dtype(tensor: torch.Tensor) -> bool:
    return tensor.dtype != torch.bool and not tensor.is_complex() and not tensor.is_floating_point()


def _flag(value: Any) -> bool | None:
    """True or False (numpy's bools too), else None."""
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    return None


def _coefficient_list(coefficients: Any) -> list[float]:
    """TeaCacheConfig.coefficients as a list of finite floats: any sequence of numbers (a list, a tuple, a
    numpy array, a 1-d tensor), never a string (whose characters iterate as digits) or a mapping."""
    values: list[float | None] = [None]
    if not isinstance(coefficients, (str, bytes, bytearray, Mapping)) and isinstance(coefficients, Iterable):
        try:
            values = [_real(item) for item in coefficients]
        except (TypeError, ValueError, RuntimeError):
            pass
    if any(value is None for value in values):
        raise TeaCacheError(f"coefficients must be a list of numbers, highest power first, got {short(coefficients)}")
    if not values:
        raise TeaCacheError("coefficients are required: take them from a preset (teacli list-models shows them)")
    if not all(math.isfinite(value) for value in values):
        raise TeaCacheError(f"coefficients must be finite, got {short(coefficients)}")
    return values


def _range_bounds(bounds: Any) -> tuple[float, float]:
    """rel_l1_range as (low, high) floats: two finite numbers in a tuple, list, array or tensor."""
    values: list[float | None] = []
    if not isinstance(bounds, (str, bytes, bytearray, Mapping)) and isinstance(bounds, Iterable):
        try:
            values = [_real(item) for item in itertools.islice(bounds, 3)]  # 3: enough to see too many
        except (TypeError, ValueError, RuntimeError):
            values = []
    if len(values) != 2 or not all(value is not None and math.isfinite(value) for value in values):
        raise TeaCacheError(f"rel_l1_range must be (low, high), two finite numbers, got {short(bounds)}")
    return values[0], values[1]


class TeaCacheState(BaseState):
    """What one CFG branch of one denoiser remembers between calls."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.previous_modulated_input: torch.Tensor | None = None
        self.cached_residuals: tuple[torch.Tensor, ...] | None = None
        self.previous_output: torch.Tensor | None = None  # only with record_output_change
        self.accumulated = 0.0
        self.calls = 0
        self.cached_in_row = 0  # consecutive cached calls, for max_cached_in_row
        self.last_step: int | None = None
        self.last_timestep: float | None = None
        self.residual_time: float | None = None  # when cached_residuals were computed (timestep, else step)
        self.slopes: tuple[torch.Tensor, ...] | None = None  # a plan's forecast: d(residual)/d(time)

    @property
    def residual_bytes(self) -> int:
        held = (*(self.cached_residuals or ()), *(self.slopes or ()))
        return sum(r.numel() * r.element_size() for r in held)

    def residuals_fit(self, streams: tuple[torch.Tensor, ...]) -> bool:
        residuals = self.cached_residuals
        return (
            residuals is not None
            and len(residuals) == len(streams)
            and all(r.shape == s.shape for r, s in zip(residuals, streams))
        )


class _BranchStates(StateManager):
    """A StateManager that falls back to one default state when no cache_context is set.

    Not every pipeline wraps its calls in `cache_context`, and not every transformer has one
    (only those mixing in CacheMixin). diffusers finds this manager through the hook's attributes
    and sets the context on it, which gives every CFG branch its own state.
    """

    # Which call of the current step this is, for pipelines that run CFG branches as separate calls
    # without naming them (Lumina2): the n-th call of every step shares one state.
    slot = 0

    def branch(self) -> str:
        if self._context is not None:
            return self._context.name
        return DEFAULT_BRANCH if self.slot == 0 else f"{DEFAULT_BRANCH}#{self.slot + 1}"

    @property
    def has_context(self) -> bool:
        return self._context is not None

    def loop_position(self) -> tuple[int | None, int | None]:
        """(step_index, num_inference_steps) when the pipeline put them in the context (Wan does)."""
        if self._context is None:
            return None, None
        return getattr(self._context, "step_index", None), getattr(self._context, "num_inference_steps", None)

    def get_state(self) -> TeaCacheState:
        name = self.branch()
        if name not in self._state_cache:
            self._state_cache[name] = TeaCacheState()
        return self._state_cache[name]

    def clear_states(self) -> None:
        """Forget every branch but keep the active context (StateManager.reset would drop it mid-call)."""
        self._state_cache.clear()


@dataclass(frozen=True)
class _Position:
    step: int
    total: int | None
    new_generation: bool
    counted: bool = False  # the step is this branch's own call count, not told by the pipeline


class TeaCacheHook(ModelHook):
    _is_stateful = True

    def __init__(
        self,
        extractor: Extractor,
        config: TeaCacheConfig,
        stats: TeaCacheStats,
        module_name: str,
        scheduler: Callable[[], Any] | None,
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.config = config
        self.stats = stats
        self.module_name = module_name
        self.state_manager = _BranchStates(TeaCacheState)
        self._scheduler = scheduler
        self._schedule: torch.Tensor | None = None  # the scheduler.timesteps object seen last
        self.generation = -1
        self._had_instance_forward = False
        self._made_registry = False  # apply_teacache created the module's HookRegistry
        self._restarted = False  # reset_state ran: the next call opens a new generation
        self._slot_step: int | None = None  # the step whose unnamed calls are being counted
        self._slot_calls = 0
        self._warned_unsynced = False

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        self._had_instance_forward = "forward" in vars(module)
        return module

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state_manager.clear_states()
        self._restarted = True
        self._schedule = None
        self._slot_step = None
        return module

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        with _lora_scope(module, self.extractor, kwargs) as kwargs:
            context = self.extractor(module, *args, **kwargs)
            context.validate()
            self.state_manager.slot = 0
            position = self._locate(context)
            if position.new_generation:
                self.generation += 1
                self.state_manager.clear_states()
                self._slot_step = None
            self.state_manager.slot = self._call_slot(position)
            state = self.state_manager.get_state()
            output, record = self._step(module, context, state, position)
        synchronize(context.hidden_states.device)
        record = StepRecord(**record, seconds=time.perf_counter() - started)
        self.stats.add(record)
        self.stats.hold_residuals(self.module_name, *self.residual_bytes())
        logger.debug(
            "%s %s step %d: rel_l1=%s acc=%.4f %s",
            self.module_name,
            record.branch,
            record.step,
            "-" if record.rel_l1 is None else f"{record.rel_l1:.4f}",
            record.accumulated,
            record.decision,
        )
        return output

    def _step(
        self, module: torch.nn.Module, context: CacheContext, state: TeaCacheState, position: _Position
    ) -> tuple[Any, dict]:
        config = self.config
        # One process (no process group): no lookup, no collective, the same rel_l1 as ever.
        distributed = _distributed()
        sharding = _context_parallel(module) if distributed else None
        if sharding is not None and state.cached_residuals is not None:
            context = _shard_streams(context, [r.shape for r in state.cached_residuals], sharding)
        if config.plan is not None:
            verdict = self._planned_verdict(position, state.residuals_fit(context.streams))
            modulated, distance = None, None
        else:
            modulated, distance, verdict = self._rule_verdict(context, state, position, sharding, distributed)
        streams = context.streams
        output_change = None
        now = _time_of(context, position)
        if verdict.decision is Decision.CACHED:
            residuals = state.cached_residuals
            outputs = tuple(stream + _to_device(r, stream.device) for stream, r in zip(streams, residuals))
            if state.slopes is not None:  # forecast: r(t) = r_b + (t - t_b) * slope, first order in time
                span = now - state.residual_time
                slopes = state.slopes
                outputs = tuple(out.add_(_to_device(s, out.device), alpha=span) for out, s in zip(outputs, slopes))
            state.previous_output = None  # a pair of outputs must be two computed calls in a row
            state.cached_in_row += 1
        else:
            outputs = context.run_transformer_blocks()
            if sharding is not None and isinstance(outputs, tuple):
                context = _shard_streams(context, [getattr(out, "shape", None) for out in outputs], sharding)
                streams = context.streams
            outputs = context.check_block_outputs(outputs)
            residuals = tuple(out - stream for out, stream in zip(outputs, streams))
            if config.cache_device is not None:
                residuals = tuple(_to_device(residual, config.cache_device) for residual in residuals)
            state.slopes = self._slopes(state, residuals, position, now)
            state.cached_residuals = residuals
            state.residual_time = now
            state.cached_in_row = 0
            if config.record_output_change:
                output_change = self._output_change(state, outputs[0].detach(), distance)
        state.previous_modulated_input = modulated
        state.accumulated = verdict.carried
        state.calls += 1
        state.last_step = position.step
        state.last_timestep = context.timestep
        record = dict(
            generation=self.generation,
            module=self.module_name,
            branch=self.state_manager.branch(),
            step=position.step,
            timestep=context.timestep,
            rel_l1=distance,
            accumulated=verdict.accumulated,
            decision=verdict.decision,
            output_rel_l1=output_change,
        )
        return context.postprocess(*outputs), record

    def _rule_verdict(
        self, context: CacheContext, state: TeaCacheState, position: _Position, sharding: Any, distributed: bool
    ) -> tuple[torch.Tensor, float | None, Verdict]:
        """TeaCache's own rule: the modulated input's change, rescaled and accumulated against the threshold.
        `context` has its streams cut to the rank's shard already (`sharding`: see _context_parallel)."""
        config = self.config
        modulated = context.select_modulated_input(config.modulated_input).detach()
        previous = state.previous_modulated_input
        if previous is not None and previous.shape != modulated.shape:
            previous = None
        group = self._sync_group(sharding, distributed)
        distance = rel_l1(modulated, previous) if previous is not None and group is None else None
        if sharding is not None and group is None and not self._warned_unsynced:
            self._warned_unsynced = True
            logger.warning(
                "TeaCache on %s: context parallelism with sync_decisions=False; ranks that see different shards "
                "may decide differently (wrong output or a hang in the attention collectives)",
                self.module_name,
            )
        in_window = self._in_window(position)  # first: a window it cannot place fails on the first call
        forced = (
            position.step == 0
            or (position.total is not None and position.step >= position.total - 1)
            or position.step < config.ret_steps
            or (config.cutoff_steps is not None and position.step >= config.cutoff_steps)
            or not in_window
            or not state.residuals_fit(context.streams)
        )
        if group is not None:
            distance, forced = _synced_distance(modulated, previous, forced, group)
        verdict = decide(
            distance=distance,
            accumulated=state.accumulated,
            coefficients=config.coefficients,
            thresh=config.thresh,
            forced=forced,
            x_range=config.rel_l1_range,
        )
        limit = config.max_cached_in_row
        if verdict.decision is Decision.CACHED and limit is not None and state.cached_in_row >= limit:
            verdict = Verdict(Decision.FORCED, 0.0, None)
        return modulated, distance, verdict

    def _planned_verdict(self, position: _Position, residuals_fit: bool) -> Verdict:
        """A plan's decision: its steps computed, every other step cached (computed when nothing fits)."""
        plan = self.config.plan
        total = position.total if position.total is not None else plan.steps
        if total != plan.steps:
            raise TeaCacheError(
                f"the plan on {self.module_name} was made for {plan.steps} steps but this run has {total}; "
                f"run {plan.steps} steps or make a plan for {total} steps"
            )
        if plan.computes(position.step):
            return Verdict(Decision.COMPUTED, 0.0, None)
        if not residuals_fit:
            return Verdict(Decision.FORCED, 0.0, None)
        return Verdict(Decision.CACHED, 0.0, None)

    def _slopes(
        self, state: TeaCacheState, residuals: tuple[torch.Tensor, ...], position: _Position, now: float
    ) -> tuple[torch.Tensor, ...] | None:
        """The residuals' change per unit of time since the branch's previous computed call, when the plan
        forecasts the gap after this step; None (plain reuse) otherwise."""
        plan = self.config.plan
        previous = state.cached_residuals
        if (
            plan is None
            or not plan.forecasts_after(position.step)
            or previous is None
            or state.residual_time is None
            or now == state.residual_time
            or len(previous) != len(residuals)
            or any(p.shape != r.shape for p, r in zip(previous, residuals))
        ):
            return None
        span = now - state.residual_time
        return tuple((r - p) / span for r, p in zip(residuals, previous))

    def _sync_group(self, sharding: Any, distributed: bool) -> Any:
        """The process group whose ranks must decide together, or None to decide alone.

        `sharding` is the transformer's ContextParallelConfig (None without context parallelism)."""
        mode = self.config.sync_decisions
        if mode is False:
            return None
        if not distributed:
            if mode is True:
                raise TeaCacheError(
                    f"sync_decisions=True on {self.module_name} needs torch.distributed initialized (launch with "
                    "torchrun or call init_process_group first); 'auto' syncs only under context parallelism"
                )
            return None
        if sharding is not None:
            return sharding._flattened_mesh.get_group()
        return torch.distributed.group.WORLD if mode is True else None

    def _in_window(self, position: _Position) -> bool:
        """Whether the step lies in the configured cache window (always, without one)."""
        if not self.config.has_window:
            return True
        if position.total is None:
            raise TeaCacheError(
                f"the cache window (start/end) on {self.module_name} needs the number of steps: "
                "set num_inference_steps in TeaCacheConfig"
            )
        return position.step in self.config.cache_window(position.total)

    def residual_bytes(self) -> tuple[int, torch.device | None]:
        """Bytes of cached residuals held by every branch of this denoiser, and the device they are on."""
        held = [state for state in self.state_manager._state_cache.values() if state.cached_residuals]
        device = held[0].cached_residuals[0].device if held else None
        return sum(state.residual_bytes for state in held), device

    @staticmethod
    def _output_change(state: TeaCacheState, output: torch.Tensor, distance: float | None) -> float | None:
        """rel_l1 of the block output since this branch's previous call, when both were computed and the
        input distance was measured too (so x and y describe the same pair of calls)."""
        previous, state.previous_output = state.previous_output, output
        if distance is None or previous is None or previous.shape != output.shape:
            return None
        return rel_l1(output, previous)

    def _call_slot(self, position: _Position) -> int:
        """0 for the first call of a step, 1 for the second... when no cache_context names the branch.

        A pipeline that runs cond and uncond as two calls per step without a cache_context would
        otherwise mix both branches in one state: their modulated inputs (and often shapes) differ.
        """
        if self.state_manager.has_context or position.counted:
            return 0
        if position.step != self._slot_step:
            self._slot_step, self._slot_calls = position.step, 0
        else:
            self._slot_calls += 1
        return self._slot_calls

    def _locate(self, context: CacheContext) -> _Position:
        """Where this call sits in its generation, from the best source there is.

        1. the pipeline's cache_context (step_index, num_inference_steps), where it passes them;
        2. the pipeline's scheduler: its step index and schedule length, and a new schedule
           (set_timesteps made a new tensor) marks a new generation;
        3. on a bare transformer: this branch's call count, with a new generation when the
           timestep goes back up or the configured number of steps has passed.
        """
        # After reset_state (pipelines call it at the end of every run) the next call starts a generation.
        first_call = self.generation < 0 or self._restarted
        self._restarted = False
        state = None if first_call else self.state_manager.get_state()
        last_step = state.last_step if state is not None else None

        step, total = self.state_manager.loop_position()
        if step is not None:
            new = first_call or (last_step is not None and step < last_step)
            return _Position(step, total or self.config.num_inference_steps, new)

        scheduler = self._scheduler() if self._scheduler is not None else None
        schedule = getattr(scheduler, "timesteps", None)
        if schedule is not None and hasattr(scheduler, "step_index"):
            begin = getattr(scheduler, "begin_index", None) or 0
            index = scheduler.step_index if scheduler.step_index is not None else begin
            new = first_call or schedule is not self._schedule
            self._schedule = schedule
            step = index - begin
            return _Position(step, len(schedule) - begin, new or (last_step is not None and step < last_step))
        if isinstance(schedule, torch.Tensor):
            # A scheduler without step_index (CogVideoX's DDIM): count this branch's calls over its
            # schedule, which still gives the total, so the last step is forced.
            new = first_call or schedule is not self._schedule
            self._schedule = schedule
            step = 0 if new else state.calls
            return _Position(step, len(schedule), new, counted=True)

        total = self.config.num_inference_steps
        if state is None:
            return _Position(0, total, True, counted=True)
        timestep_rose = (
            context.timestep is not None and state.last_timestep is not None and context.timestep > state.last_timestep
        )
        if timestep_rose or (total is not None and state.calls >= total):
            return _Position(0, total, True, counted=True)
        return _Position(state.calls, total, False, counted=True)


@contextmanager
def _lora_scope(module: torch.nn.Module, extractor: Extractor, kwargs: dict) -> Iterator[dict]:
    """Scale LoRA layers around the call, as diffusers' `apply_lora_scale` on the replaced forward does."""
    name = getattr(extractor, "lora_kwargs", None)
    if name is None or kwargs.get(name) is None:
        yield kwargs
        return
    from diffusers.utils import USE_PEFT_BACKEND, scale_lora_layers, unscale_lora_layers

    attention_kwargs = dict(kwargs[name])
    scale = attention_kwargs.pop("scale", 1.0)
    if USE_PEFT_BACKEND:
        scale_lora_layers(module, scale)
    try:
        yield {**kwargs, name: attention_kwargs}
    finally:
        if USE_PEFT_BACKEND:
            unscale_lora_layers(module, scale)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _time_of(context: CacheContext, position: _Position) -> float:
    """Where a call sits in time for a forecast: its timestep where the extractor reports one, else its step."""
    return float(context.timestep) if context.timestep is not None else float(position.step)


def _context_parallel(module: torch.nn.Module) -> Any:
    """diffusers' ContextParallelConfig of a transformer with context parallelism enabled, else None."""
    parallel = getattr(unwrap_module(module), "_parallel_config", None)
    sharding = getattr(parallel, "context_parallel_config", None)
    if sharding is None or getattr(sharding, "_flattened_mesh", None) is None:
        return None
    return sharding if sharding.ring_degree * sharding.ulysses_degree > 1 else None


def _synced_distance(
    modulated: torch.Tensor, previous: torch.Tensor | None, forced: bool, group: Any
) -> tuple[float | None, bool]:
    """rel_l1 of the whole tensor the group's ranks hold shards of, and whether any rank must compute.

    Every rank calls this exactly once per transformer call whatever its own state, so the collectives
    always pair up; the result is the same on every rank, and so is the decision taken from it.
    """
    if previous is not None:
        terms = rel_l1_terms(modulated, previous)
    else:
        terms = torch.zeros(3, dtype=torch.float64, device=modulated.device)
    flags = torch.tensor([previous is None, forced], dtype=torch.float64, device=modulated.device)
    summed = torch.cat((terms, flags))
    torch.distributed.all_reduce(summed, op=torch.distributed.ReduceOp.SUM, group=group)
    numerator, denominator, count, missing, forcing = summed.tolist()
    distance = rel_l1_from_terms(numerator, denominator, count) if missing == 0 else None
    return distance, forcing > 0


def _shard_streams(context: CacheContext, shapes: Sequence[Any], sharding: Any) -> CacheContext:
    """The context with its streams cut to the rank's sequence shard where the blocks work on one.

    Some context-parallel plans (Wan, Qwen-Image) split the sequence at the first block, not at the
    transformer's input: the blocks then return this rank's shard of a full-length stream, and the
    residual (and a cached call's sum) must use the same shard, cut as diffusers cuts it.
    """
    from diffusers.hooks.context_parallel import EquipartitionSharder, PartitionAnythingSharder

    streams = list(context.streams)
    for index, (stream, shape) in enumerate(zip(streams, shapes)):
        if shape is None or stream.shape == shape or stream.ndim != len(shape):
            continue
        differing = [dim for dim in range(stream.ndim) if stream.shape[dim] != shape[dim]]
        if len(differing) != 1:
            continue
        if sharding.ulysses_anything or sharding.ring_anything:
            shard = PartitionAnythingSharder.shard_anything(stream, differing[0], sharding._flattened_mesh)
        elif stream.shape[differing[0]] % sharding._flattened_mesh.size() == 0:
            shard = EquipartitionSharder.shard(stream, differing[0], sharding._flattened_mesh)
        else:
            continue
        if shard.shape == shape:
            streams[index] = shard
    if all(new is old for new, old in zip(streams, context.streams)):
        return context
    if len(streams) == 1:
        return replace(context, hidden_states=streams[0])
    return replace(context, hidden_states=streams[0], encoder_hidden_states=streams[1])


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a residual between the compute device and the cache device, the exact values kept."""
    if tensor.device == device:
        return tensor
    # GPU -> host lands in pinned memory when non_blocking (torch pins the copy), and pinned host -> GPU
    # is asynchronous; both copies are queued on the current stream, so the order of use is kept.
    if tensor.device.type == "cuda" and device.type == "cpu":
        return tensor.to(device, non_blocking=True)
    return tensor.to(device, non_blocking=tensor.device.type == "cpu" and tensor.is_pinned())


def synchronize(device: torch.device) -> None:
    """Wait for the device, so wall-clock times measure finished work."""
    # The next call's rel_l1 .item() waits for this one anyway, so waiting here costs nothing and
    # makes the per-call seconds true on GPUs.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class TeaCacheHandle:
    """What apply_teacache returns: the per-call records and a way to undo it."""

    def __init__(
        self,
        target: Any,
        modules: dict[str, torch.nn.Module],
        configs: dict[str, TeaCacheConfig],
        stats: TeaCacheStats,
    ):
        self.target = target
        self.modules = modules
        self.configs = configs  # per denoiser name
        self.stats = stats

    @property
    def config(self) -> TeaCacheConfig:
        """The config of the first denoiser (the only one, except on two-expert pipelines)."""
        return next(iter(self.configs.values()))

    @property
    def hooks(self) -> list[TeaCacheHook]:
        return [hook for module in self.modules.values() if (hook := _find_hook(module)) is not None]

    def reset(self) -> None:
        """Forget every branch state and every record, as before the first generation."""
        for hook in self.hooks:
            hook.reset_state(None)
            hook.generation = -1
        self.stats.clear()

    def remove(self) -> None:
        for module in self.modules.values():
            _remove_hook(module)

    @property
    def active(self) -> bool:
        return bool(self.hooks)

    def __enter__(self) -> TeaCacheHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def denoisers(pipe_or_transformer: Any) -> dict[str, torch.nn.Module]:
    """The transformer(s) TeaCache hooks: the module itself, or a pipeline's transformer components."""
    if isinstance(pipe_or_transformer, torch.nn.Module):
        return {"transformer": pipe_or_transformer}
    found = {
        name: module
        for name in DENOISER_COMPONENTS
        if isinstance(module := getattr(pipe_or_transformer, name, None), torch.nn.Module)
    }
    if not found:
        raise TeaCacheError(
            f"{type(pipe_or_transformer).__name__} has no transformer component; TeaCache hooks diffusion "
            "transformers (pass a pipeline with `.transformer` or the transformer module itself)"
        )
    return found


def apply_teacache(pipe_or_transformer: Any, config: TeaCacheConfig | Mapping[str, TeaCacheConfig]) -> TeaCacheHandle:
    """Hook TeaCache onto a diffusers pipeline's transformer(s) or onto a bare transformer.

    Every transformer call then goes through the extractor registered for its class. On a pipeline
    the scheduler tells the hook where the denoising loop is, so the first and last steps are
    always computed; each `cache_context` name (the CFG branch) keeps its own state.

    `config` is one TeaCacheConfig for every denoiser, or one per denoiser name for pipelines with
    two experts (Wan 2.2: {"transformer": ..., "transformer_2": ...}), each with its own coefficients.

    Under diffusers' context parallelism it may come before or after enable_parallelism: TeaCache always
    runs inside the input split, on this rank's shard, and caches that shard's residual.
    """
    modules = denoisers(pipe_or_transformer)
    configs = _configs_by_module(config, modules)
    extractors = {name: get_extractor(type(unwrap_module(m)).__name__) for name, m in modules.items()}
    for name, module in modules.items():
        _check_can_hook(name, module)
        _check_config_fits(name, configs[name], bare=isinstance(pipe_or_transformer, torch.nn.Module))

    if isinstance(pipe_or_transformer, torch.nn.Module):
        scheduler = None
    else:
        pipe_ref = weakref.ref(pipe_or_transformer)
        scheduler = lambda: getattr(pipe_ref(), "scheduler", None)  # noqa: E731

    stats = TeaCacheStats()
    for name, module in modules.items():
        config = configs[name]
        hook = TeaCacheHook(extractors[name], config, stats, name, scheduler)
        hook._made_registry = not hasattr(module, "_diffusers_hook")
        registry = HookRegistry.check_if_exists_or_initialize(module)
        _register_inside_context_parallel(registry, hook)
        registry.invalidate_child_registries_cache()
        if config.record_output_change:
            logger.debug("TeaCache recording input and output changes on %s for calibration", name)
        elif config.plan is not None:
            plan = config.plan
            logger.info(
                "TeaCache enabled on %s (%s): a plan computing %d of %d steps (%s), %s",
                name,
                type(unwrap_module(module)).__name__,
                plan.budget,
                plan.steps,
                plan.timeline(),
                plan.source or "given",
            )
        else:
            logger.info(
                "TeaCache enabled on %s (%s): thresh %g, coefficients: %s",
                name,
                type(unwrap_module(module)).__name__,
                config.thresh,
                config.coefficients_source,
            )
    return TeaCacheHandle(pipe_or_transformer, modules, configs, stats)


# diffusers' context-parallel hooks on the transformer itself (its _cp_plan's "" entry), by the names
# hooks/context_parallel.py registers them under ("cp_input---{module_id}", "cp_output---{module_id}").
_CONTEXT_PARALLEL_ROOT_HOOKS = ("cp_input---", "cp_output---")


def _register_inside_context_parallel(registry: HookRegistry, hook: TeaCacheHook) -> None:
    """Register the hook so that it runs inside diffusers' context-parallel input split, if there is one.

    The last hook registered runs first. TeaCache replaces the forward, so on top of the split it would
    see the whole sequence, and the blocks' attention, which expects a shard, would be wrong. When
    enable_parallelism came first (or from_pretrained(parallel_config=...)), diffusers' hooks are taken
    off and registered again above TeaCache, in their order (only those: others may not survive it).
    """
    order = registry._hook_order
    first = next((i for i, name in enumerate(order) if name in _CONTEXT_PARALLEL_ROOT_HOOKS), None)
    if first is None:
        registry.register_hook(hook, TEACACHE_HOOK)
        return
    others = [name for name in order[first:] if name not in _CONTEXT_PARALLEL_ROOT_HOOKS]
    if others:
        raise TeaCacheError(
            f"{hook.module_name} has hooks {others} added after context parallelism; apply TeaCache before "
            "them (or before enable_parallelism)"
        )
    above = [(name, registry.hooks[name]) for name in order[first:]]
    for name, _ in reversed(above):
        registry.remove_hook(name, recurse=False)
    registry.register_hook(hook, TEACACHE_HOOK)
    for name, outer in above:
        registry.register_hook(outer, name)


def _configs_by_module(config: Any, modules: dict[str, torch.nn.Module]) -> dict[str, TeaCacheConfig]:
    if isinstance(config, TeaCacheConfig):
        return dict.fromkeys(modules, config)
    if not isinstance(config, Mapping) or not all(isinstance(c, TeaCacheConfig) for c in config.values()):
        raise TypeError(
            f"config must be a TeaCacheConfig or a mapping of denoiser name to one, got {type(config).__name__}"
        )
    missing, unknown = sorted(set(modules) - set(config)), sorted(set(config) - set(modules))
    if missing or unknown:
        raise TeaCacheError(
            f"per-denoiser configs must match the denoisers {sorted(modules)}: "
            + "; ".join(filter(None, [missing and f"missing {missing}", unknown and f"unknown {unknown}"]))
        )
    return dict(config)


def remove_teacache(pipe_or_transformer: Any) -> None:
    """Undo apply_teacache: the transformer(s) behave exactly as before they were hooked."""
    for module in denoisers(pipe_or_transformer).values():
        _remove_hook(module)


def _check_can_hook(name: str, module: torch.nn.Module) -> None:
    if _find_hook(module) is not None:
        raise TeaCacheError(f"TeaCache is already applied to {name}; call remove_teacache() before applying it again")
    if getattr(module, "is_cache_enabled", False):
        raise TeaCacheError(
            f"{name} already has a diffusers cache enabled ({type(module._cache_config).__name__}); "
            "call disable_cache() on it first, caches do not stack"
        )
    for where, submodule in module.named_modules():
        registry = vars(submodule).get("_diffusers_hook")
        for hook_name, hook in getattr(registry, "hooks", {}).items():
            cache = _CACHE_BY_MARK.get(hook_name) or _CACHE_BY_MARK.get(type(hook).__name__)
            if cache is not None:
                raise TeaCacheError(
                    f"{name} already has {cache} enabled (diffusers hook {hook_name!r} on {where or name}); "
                    "remove it first (HookRegistry.remove_hook with recurse=True), caches do not stack"
                )
    if hasattr(module, "_hf_hook"):
        raise TeaCacheError(
            f"{name} has an accelerate offload hook; apply TeaCache before enable_model_cpu_offload() "
            "or enable_sequential_cpu_offload()"
        )


def _check_config_fits(name: str, config: TeaCacheConfig, bare: bool) -> None:
    """Fail at apply time on what would only fail at the first call."""
    if bare and config.has_window and config.num_inference_steps is None:
        raise TeaCacheError(
            f"the cache window (start/end) on a bare {name} needs the number of steps: "
            "set num_inference_steps in TeaCacheConfig"
        )
    if config.cache_device is not None:
        try:
            torch.empty(0, device=config.cache_device)
        except (RuntimeError, AssertionError):  # AssertionError: torch built without that backend
            raise TeaCacheError(
                f"cache_device {str(config.cache_device)!r} is not available here; use 'cpu' or a device torch sees"
            ) from None


def _find_hook(module: torch.nn.Module) -> TeaCacheHook | None:
    registry = getattr(module, "_diffusers_hook", None)
    return registry.get_hook(TEACACHE_HOOK) if registry is not None else None


def _remove_hook(module: torch.nn.Module) -> None:
    hook = _find_hook(module)
    if hook is None:
        return
    registry = module._diffusers_hook
    registry.remove_hook(TEACACHE_HOOK, recurse=False)
    registry.invalidate_child_registries_cache()
    # The registry leaves the original bound method as an instance attribute; drop it so the
    # module's forward is the class's again, as it was.
    if not registry._hook_order and not hook._had_instance_forward:
        vars(module).pop("forward", None)
    # An empty registry apply_teacache made goes too (it references the module: a cycle left behind).
    if not registry.hooks and hook._made_registry:
        vars(module).pop("_diffusers_hook", None)
