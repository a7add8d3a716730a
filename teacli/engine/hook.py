"""The TeaCache hook: each transformer call decided, then computed through its extractor or reused.

TeaCache (arXiv 2411.19108) skips the transformer blocks on calls whose modulated input barely
moved since the last computed one, adding the cached block residual instead. The hook replaces the
transformer's forward through diffusers' `HookRegistry`; an extractor (see teacli.extractors) supplies every
model-specific piece, so nothing here names a model. apply.py puts it on a pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .config import TeaCacheConfig, TeaCacheError
from .context import CacheContext
from .decision import Decision, Verdict, decide, rel_l1
from .devices import synchronize, to_device
from .diffusers_internals import StatefulModelHook
from .onload import first_blocks_onloaded
from .parallel import context_parallel, distributed, shard_streams, sync_group, synced_distance
from .registry import Extractor
from .state import BranchStates, TeaCacheState
from .stats import StepRecord, TeaCacheStats

logger = logging.getLogger("teacli")

# The name the hook is registered under in a module's HookRegistry.
TEACACHE_HOOK = "teacli_teacache"


@dataclass(frozen=True)
class _Position:
    step: int
    total: int | None
    new_generation: bool
    counted: bool = False  # the step is this branch's own call count, not told by the pipeline


class TeaCacheHook(StatefulModelHook):
    """Replaces a denoiser's forward: each call is decided, then computed through the extractor or reused."""

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
        self.state_manager = BranchStates(TeaCacheState)
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
        with _lora_scope(module, self.extractor, kwargs) as kwargs, first_blocks_onloaded(module):
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
        """Decide, then reuse the cached residual or run the blocks; returns the output and the call's record."""
        # One process (no process group): no lookup, no collective, the same rel_l1 as ever.
        is_distributed = distributed()
        sharding = context_parallel(module) if is_distributed else None
        if sharding is not None and state.cached_residuals is not None:
            context = shard_streams(context, [r.shape for r in state.cached_residuals], sharding)
        if self.config.plan is not None:
            verdict = self._planned_verdict(position, state.residuals_fit(context.streams))
            modulated, distance = None, None
        else:
            modulated, distance, verdict = self._rule_verdict(context, state, position, sharding, is_distributed)
        now = _time_of(context, position)
        output_change = None
        if verdict.decision is Decision.CACHED:
            outputs = self._reuse(context.streams, state, now)
        else:
            context, outputs = self._compute(context, sharding)
            output_change = self._remember_residuals(context.streams, outputs, state, position, now, distance)
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

    @staticmethod
    def _reuse(streams: tuple[torch.Tensor, ...], state: TeaCacheState, now: float) -> tuple[torch.Tensor, ...]:
        """A cached call: the streams plus the cached residuals (moved forward along the slopes of a forecast)."""
        outputs = tuple(stream + to_device(r, stream.device) for stream, r in zip(streams, state.cached_residuals))
        if state.slopes is not None:  # forecast: r(t) = r_b + (t - t_b) * slope, first order in time
            span = now - state.residual_time
            outputs = tuple(out.add_(to_device(s, out.device), alpha=span) for out, s in zip(outputs, state.slopes))
        state.previous_output = None  # a pair of outputs must be two computed calls in a row
        state.cached_in_row += 1
        return outputs

    @staticmethod
    def _compute(context: CacheContext, sharding: Any) -> tuple[CacheContext, tuple[torch.Tensor, ...]]:
        """A computed call: run the blocks; the context comes back cut to the shard the blocks returned."""
        outputs = context.run_transformer_blocks()
        if sharding is not None and isinstance(outputs, tuple):
            context = shard_streams(context, [getattr(out, "shape", None) for out in outputs], sharding)
        return context, context.check_block_outputs(outputs)

    def _remember_residuals(
        self,
        streams: tuple[torch.Tensor, ...],
        outputs: tuple[torch.Tensor, ...],
        state: TeaCacheState,
        position: _Position,
        now: float,
        distance: float | None,
    ) -> float | None:
        """Keep a computed call's residuals (on the cache device); returns the output change when recording."""
        config = self.config
        residuals = tuple(out - stream for out, stream in zip(outputs, streams))
        if config.cache_device is not None:
            residuals = tuple(to_device(residual, config.cache_device) for residual in residuals)
        state.slopes = self._slopes(state, residuals, position, now)
        state.cached_residuals = residuals
        state.residual_time = now
        state.cached_in_row = 0
        if config.record_output_change:
            return self._output_change(state, outputs[0].detach(), distance)
        return None

    def _rule_verdict(
        self, context: CacheContext, state: TeaCacheState, position: _Position, sharding: Any, distributed: bool
    ) -> tuple[torch.Tensor, float | None, Verdict]:
        """TeaCache's own rule: the modulated input's change, rescaled and accumulated against the threshold.
        `context` has its streams cut to the rank's shard already (`sharding`: see parallel.context_parallel)."""
        config = self.config
        modulated = context.select_modulated_input(config.modulated_input).detach()
        previous = state.previous_modulated_input
        if previous is not None and previous.shape != modulated.shape:
            previous = None
        group = sync_group(self.config.sync_decisions, sharding, self.module_name)
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
            distance, forced = synced_distance(modulated, previous, forced, group)
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
        held = [state for state in self.state_manager.states() if state.cached_residuals]
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


def _time_of(context: CacheContext, position: _Position) -> float:
    """Where a call sits in time for a forecast: its timestep where the extractor reports one, else its step."""
    return float(context.timestep) if context.timestep is not None else float(position.step)
