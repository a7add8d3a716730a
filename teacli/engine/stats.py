"""One record per transformer call; every total is derived from the records, never counted twice."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from .decision import Decision


@dataclass(frozen=True)
class StepRecord:
    generation: int  # counts generations seen by this handle, from 0
    module: str  # which denoiser: "transformer", "transformer_2", ...
    branch: str  # the cache_context name ("cond", "uncond", "cond_uncond") or "default"
    step: int  # denoising step index within the generation
    timestep: float | None
    rel_l1: float | None  # None on a branch's first call
    accumulated: float  # the accumulated distance compared with the threshold
    decision: Decision
    seconds: float
    output_rel_l1: float | None = None  # rel_l1 of the block output, with TeaCacheConfig.record_output_change

    def to_dict(self) -> dict:
        data = asdict(self)
        data["decision"] = str(self.decision)
        return data


@dataclass(frozen=True)
class Totals:
    computed: int = 0
    cached: int = 0
    forced: int = 0

    @property
    def calls(self) -> int:
        return self.computed + self.cached + self.forced

    @property
    def executed(self) -> int:
        """Calls that ran the transformer blocks (computed or forced)."""
        return self.computed + self.forced

    def to_dict(self) -> dict:
        return {"computed": self.computed, "cached": self.cached, "forced": self.forced, "calls": self.calls}


def _totals(records: list[StepRecord]) -> Totals:
    counts = Counter(record.decision for record in records)
    return Totals(counts[Decision.COMPUTED], counts[Decision.CACHED], counts[Decision.FORCED])


@dataclass
class TeaCacheStats:
    records: list[StepRecord] = field(default_factory=list)
    peak_residual_bytes: int = 0  # most bytes of cached residuals held at once, every branch and denoiser
    residual_device: str | None = None  # where the residuals were held (None: nothing cached yet)
    # Where the settings came from, set by teacli.apply_teacache: the preset's name (None: given in full) and a
    # sentence naming it and how it was found. Not records: clear() keeps them, to_dict() leaves them out.
    preset: str | None = None
    coefficients_source: str | None = None
    _held: dict[str, int] = field(default_factory=dict, repr=False)  # bytes held now, per denoiser

    def add(self, record: StepRecord) -> None:
        self.records.append(record)

    def hold_residuals(self, module: str, nbytes: int, device: object | None) -> None:
        """What one denoiser's branches hold after a call; keeps the peak over every denoiser."""
        self._held[module] = nbytes
        self.peak_residual_bytes = max(self.peak_residual_bytes, sum(self._held.values()))
        if device is not None:
            self.residual_device = str(device)

    def clear(self) -> None:
        self.records.clear()
        self._held.clear()
        self.peak_residual_bytes = 0
        self.residual_device = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def totals(self) -> Totals:
        return _totals(self.records)

    @property
    def computed(self) -> int:
        """Calls that ran the blocks, forced ones included."""
        return self.totals.executed

    @property
    def cached(self) -> int:
        return self.totals.cached

    def branches(self) -> list[tuple[str, str]]:
        """(module, branch) pairs in order of first appearance."""
        return list(dict.fromkeys((record.module, record.branch) for record in self.records))

    def by_branch(self) -> dict[tuple[str, str], Totals]:
        return {key: _totals([r for r in self.records if (r.module, r.branch) == key]) for key in self.branches()}

    def timeline(self, module: str, branch: str) -> list[Decision]:
        return [r.decision for r in self.records if (r.module, r.branch) == (module, branch)]

    def seconds(self, decisions: tuple[Decision, ...] = tuple(Decision)) -> float:
        return sum(r.seconds for r in self.records if r.decision in decisions)

    def to_dict(self) -> dict:
        return {
            "totals": self.totals.to_dict(),
            "branches": {
                f"{module}/{branch}": totals.to_dict() for (module, branch), totals in self.by_branch().items()
            },
            "peak_residual_bytes": self.peak_residual_bytes,
            "residual_device": self.residual_device,
            "records": [record.to_dict() for record in self.records],
        }
