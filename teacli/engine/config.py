"""TeaCacheConfig: how TeaCache decides, every field checked for what the API can be handed."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import TeacliError
from ..limits import MAX_STEPS, short
from .plan import Plan


class TeaCacheError(TeacliError, ValueError):
    """A TeaCache setup the user can fix: the message says what was wrong and what to do."""


# The engine's threshold for a config that brings its own coefficients but no thresh.
DEFAULT_THRESH = 0.2
# A config the engine is handed without coefficients (teacli.apply_teacache fills them from a preset first).
COEFFICIENTS_REQUIRED = (
    "coefficients are required: leave them out (None) and apply with teacli.apply_teacache, which takes the "
    "model's preset's, or pass a preset's (teacli list-models shows them)"
)


@dataclass
class TeaCacheConfig:
    """How TeaCache decides.

    Leave `coefficients` out and `teacli.apply_teacache` takes them from the preset of the pipeline's model (by
    hub id or local path, else by transformer class), with every other field left None: the threshold,
    ret_steps, cutoff_steps, rel_l1_range, modulated_input and a second expert's own settings. What you give
    wins. A config with coefficients is used as given: thresh then defaults to 0.2 and ret_steps to 0.

    Example:
        ```python
        import torch
        from diffusers import FluxPipeline
        from teacli import TeaCacheConfig, apply_teacache

        pipe = FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", torch_dtype=torch.bfloat16).to("cuda")
        # The preset's coefficients (flux-dev, found by the hub id) at a threshold of your own:
        handle = apply_teacache(pipe, TeaCacheConfig(thresh=0.4))
        image = pipe("a red fox in the snow", num_inference_steps=28).images[0]
        print(handle.stats.coefficients_source, handle.stats.totals)
        handle.remove()

        # Or every number your own, with no preset involved (a polynomial from `teacli calibrate`):
        config = TeaCacheConfig(thresh=0.25, coefficients=[498.65, -283.78, 55.86, -3.82, 0.264], ret_steps=1)
        with apply_teacache(pipe, config) as handle:
            image = pipe("a red fox in the snow", num_inference_steps=28).images[0]
        ```

    Args:
        thresh: reuse the cached residual while the accumulated rescaled distance stays below this.
            0 computes every call. Published sweet spots are 0.1-0.6 depending on the model.
            None: the preset's (without coefficients), else 0.2.
        coefficients: the rescaling polynomial, highest power first (numpy.poly1d order). None: the preset's,
            filled in by teacli.apply_teacache (the engine's own apply refuses a config without them).
        ret_steps: force the first N steps of every generation (some references warm up longer).
            None: the preset's (without coefficients), else 0.
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

    thresh: float | None = None
    coefficients: Sequence[float] | None = None
    ret_steps: int | None = None
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
        if self.plan is not None and not isinstance(self.plan, Plan):
            raise TeaCacheError(f"plan must be a teacli.engine.plan.Plan or None, got {short(self.plan)}")
        if self.plan is not None and (
            self.coefficients is None or (isinstance(self.coefficients, (list, tuple)) and not self.coefficients)
        ):
            self.coefficients = []  # a plan decides without them
        elif self.coefficients is not None:
            self.coefficients = _coefficient_list(self.coefficients)
        if self.complete:  # nothing comes from a preset: the engine's defaults for what was left out
            self.thresh = DEFAULT_THRESH if self.thresh is None else self.thresh
            self.ret_steps = 0 if self.ret_steps is None else self.ret_steps
        if self.thresh is not None:
            self.thresh = _checked_thresh(self.thresh)
        for name in ("ret_steps", "cutoff_steps", "num_inference_steps"):
            setattr(self, name, _checked_step(name, getattr(self, name)))
        if self.rel_l1_range is not None:
            self.rel_l1_range = _checked_range(self.rel_l1_range)
        self._check_names()
        record = _flag(self.record_output_change)
        if record is None:
            raise TeaCacheError(f"record_output_change must be True or False, got {short(self.record_output_change)}")
        self.record_output_change = record
        self.start, self.end = _checked_window(self.start, self.end)
        self.max_cached_in_row = _checked_row_limit(self.max_cached_in_row)
        if self.cache_device is not None:
            self.cache_device = _checked_cache_device(self.cache_device)
        sync = self.sync_decisions if isinstance(self.sync_decisions, str) else _flag(self.sync_decisions)
        if sync != "auto" and not isinstance(sync, bool):
            raise TeaCacheError(f"sync_decisions must be 'auto', True or False, got {short(self.sync_decisions)}")
        self.sync_decisions = sync

    def _check_names(self) -> None:
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

    @property
    def complete(self) -> bool:
        """It has what the engine needs to decide (coefficients, or a plan); else a preset fills it in."""
        return self.coefficients is not None

    @property
    def has_window(self) -> bool:
        """A cache window narrower than the whole schedule was set."""
        return self.start > 0.0 or self.end < 1.0

    def cache_window(self, total: int) -> range:
        """The steps of a `total`-step schedule that may be cached (before the first/last-step rule)."""
        # Rounded first so that e.g. 0.3 * 10 = 3.0000000000000004 still lets step 3 in.
        return range(math.ceil(round(self.start * total, 9)), math.ceil(round(self.end * total, 9)))


def _checked_thresh(value: Any) -> float:
    thresh = _real(value)
    if thresh is None:
        raise TeaCacheError(f"thresh must be a number, got {short(value)}")
    if not math.isfinite(thresh) or thresh < 0:
        raise TeaCacheError(f"thresh must be a finite number >= 0 (0 computes every step), got {short(value)}")
    return thresh


def _checked_step(name: str, value: Any) -> int | None:
    """ret_steps, cutoff_steps or num_inference_steps: a step count within the schedule, or None (ret_steps is
    None only in a config without coefficients, where the preset gives it)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise TeaCacheError(f"{name} must be a non-negative integer, got {short(value)}")
    most = MAX_STEPS
    if value > most:
        raise TeaCacheError(f"{name} must be at most {most} (a step of the schedule), got {short(value)}")
    return int(value)


def _checked_range(bounds: Any) -> tuple[float, float]:
    low, high = _range_bounds(bounds)
    if not low <= high:
        raise TeaCacheError(f"rel_l1_range must be (low, high) with low <= high, got {short(bounds)}")
    return low, high


def _checked_window(start: Any, end: Any) -> tuple[float, float]:
    """start and end as floats with 0 <= start < end <= 1."""
    bounds = []
    for name, given in (("start", start), ("end", end)):
        value = _real(given)
        if value is None or not math.isfinite(value):
            raise TeaCacheError(f"{name} must be a fraction of the schedule between 0 and 1, got {short(given)}")
        bounds.append(value)
    start, end = bounds
    if not 0.0 <= start < end <= 1.0:
        raise TeaCacheError(
            "the cache window needs 0 <= start < end <= 1 (fractions of the schedule), "
            f"got start={start:g}, end={end:g}"
        )
    return start, end


def _checked_row_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        hint = "; to compute every step use thresh 0" if isinstance(limit, numbers.Integral) and limit == 0 else ""
        raise TeaCacheError(f"max_cached_in_row must be an integer >= 1 or None, got {short(limit)}{hint}")
    return int(limit)


def _checked_cache_device(value: Any) -> torch.device:
    device = None
    if isinstance(value, (str, torch.device)) or (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        try:
            device = torch.device(value)
        except (RuntimeError, TypeError, ValueError):
            pass
    if device is None:
        raise TeaCacheError(f"cache_device {short(value)} is not a torch device; give e.g. 'cpu' or 'cuda:0'")
    if device.type == "meta":
        raise TeaCacheError(
            "cache_device 'meta' cannot hold residuals (a meta tensor has no values); use 'cpu' or a GPU"
        )
    return device


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
        raise TeaCacheError(COEFFICIENTS_REQUIRED)
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
