"""The TeaCache decision rule (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video
Diffusion Model", arXiv 2411.19108), as one pure function so it can be tested on scripted inputs.

Per CFG branch: measure the relative L1 change of the modulated input since the previous call,
rescale it with a fitted polynomial, add it to an accumulator, and reuse the cached residual while
the accumulator stays below the threshold. Computing resets the accumulator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import torch


class Decision(str, Enum):
    """What the hook did with one transformer call."""

    COMPUTED = "computed"  # the accumulated distance reached the threshold
    CACHED = "cached"  # the cached residual was reused
    FORCED = "forced"  # computed because a rule demanded it (first/last step, ret_steps, no cache yet)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    accumulated: float  # the accumulated distance compared with the threshold (0 when forced)
    rescaled: float | None  # poly(rel_l1) clamped at 0, None when it was not evaluated

    @property
    def carried(self) -> float:
        """The accumulator the next call starts from: computing resets it."""
        return self.accumulated if self.decision is Decision.CACHED else 0.0


def rel_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean|current - previous| / mean|previous|, in float32 whatever the model dtype."""
    current = current.float()
    previous = previous.float()
    denominator = previous.abs().mean()
    return ((current - previous).abs().mean() / denominator.clamp_min(1e-12)).item()


def rel_l1_terms(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """rel_l1's pieces that add up over shards: [sum|current - previous|, sum|previous|, element count].

    Summed over the ranks that each hold a shard of the tensor (context parallelism), they give
    rel_l1 of the whole tensor through `rel_l1_from_terms`. float64, on the inputs' device.
    """
    current = current.float()
    previous = previous.float()
    numerator = (current - previous).abs().sum(dtype=torch.float64)
    denominator = previous.abs().sum(dtype=torch.float64)
    count = torch.tensor(float(previous.numel()), dtype=torch.float64, device=previous.device)
    return torch.stack((numerator, denominator, count))


def rel_l1_from_terms(numerator: float, denominator: float, count: float) -> float:
    """rel_l1 from summed terms: mean|current - previous| / mean|previous|, as `rel_l1` clamps it."""
    return (numerator / count) / max(denominator / count, 1e-12)


def rescale(distance: float, coefficients: Sequence[float], x_range: tuple[float, float] | None = None) -> float:
    """Evaluate the polynomial (highest power first, like numpy.poly1d) and clamp it at 0.

    A fitted polynomial can dip below zero near rel_l1 = 0; a negative term would let the
    accumulator shrink, so calls could be cached forever. With `x_range` (the calibrated range of
    rel_l1) the input is clamped first, so the fit is never extrapolated.
    """
    if x_range is not None:
        distance = min(max(distance, x_range[0]), x_range[1])
    value = 0.0
    for coefficient in coefficients:
        value = value * distance + coefficient
    return max(value, 0.0)


def decide(
    *,
    distance: float | None,
    accumulated: float,
    coefficients: Sequence[float],
    thresh: float,
    forced: bool,
    x_range: tuple[float, float] | None = None,
) -> Verdict:
    """Decide one call. `distance` is rel_l1 to the previous call of the same branch (None on its first)."""
    if forced or distance is None:
        return Verdict(Decision.FORCED, 0.0, None)
    rescaled = rescale(distance, coefficients, x_range)
    accumulated += rescaled
    decision = Decision.CACHED if accumulated < thresh else Decision.COMPUTED
    return Verdict(decision, accumulated, rescaled)
