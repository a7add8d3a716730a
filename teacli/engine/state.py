"""What TeaCache remembers between calls: one state per CFG branch of each denoiser."""

from __future__ import annotations

import torch
from diffusers.hooks.hooks import BaseState, StateManager

from .diffusers_internals import context_states, current_context

DEFAULT_BRANCH = "default"


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


class BranchStates(StateManager):
    """A StateManager that falls back to one default state when no cache_context is set.

    Not every pipeline wraps its calls in `cache_context`, and not every transformer has one
    (only those mixing in CacheMixin). diffusers finds this manager through the hook's attributes
    and sets the context on it, which gives every CFG branch its own state.
    """

    # Which call of the current step this is, for pipelines that run CFG branches as separate calls
    # without naming them (Lumina2): the n-th call of every step shares one state.
    slot = 0

    def branch(self) -> str:
        context = current_context(self)
        if context is not None:
            return context.name
        return DEFAULT_BRANCH if self.slot == 0 else f"{DEFAULT_BRANCH}#{self.slot + 1}"

    @property
    def has_context(self) -> bool:
        return current_context(self) is not None

    def loop_position(self) -> tuple[int | None, int | None]:
        """(step_index, num_inference_steps) when the pipeline put them in the context (Wan does)."""
        context = current_context(self)
        if context is None:
            return None, None
        return getattr(context, "step_index", None), getattr(context, "num_inference_steps", None)

    def get_state(self) -> TeaCacheState:
        name = self.branch()
        states = context_states(self)
        if name not in states:
            states[name] = TeaCacheState()
        return states[name]

    def clear_states(self) -> None:
        """Forget every branch but keep the active context (StateManager.reset would drop it mid-call)."""
        context_states(self).clear()

    def states(self) -> list[TeaCacheState]:
        """Every branch's state."""
        return list(context_states(self).values())
