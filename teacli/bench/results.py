"""A bench's rows and what they say against vanilla: speedup, ideal speedup, efficiency, quality, memory.

A row of one prompt (`BenchRow`: its runs) and a row over many (`PromptsRow`: one BenchRow per caption) answer the
same questions (`typical_seconds`, `computed`, `total`, ...), so both results share one `Comparison` of a row with
vanilla, and their JSON rows share the fields they have in common.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..generation.measure import PSNR_CAP, Quality, Run, median
from ..generation.runner import GenerationRequest
from .configs import BenchConfig, Dropped


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

    typical_seconds = median  # what a speedup divides: the median of the runs

    @property
    def spread(self) -> float:
        return max(self.seconds) - min(self.seconds)

    @property
    def measurements(self) -> int:
        return len(self.runs)

    @property
    def noise(self) -> float:
        """How far the median may sit from the true time: the runs' range, a cautious bound."""
        return self.spread

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

    typical_seconds = seconds  # what a speedup divides: the mean of the captions' medians

    @property
    def measurements(self) -> int:
        return sum(row.measurements for row in self.captions)

    @property
    def noise(self) -> float:
        """How far the mean may sit from the true time: the captions' range over the square root of their count
        (pictures of one size cost the same, so their spread is the timing's)."""
        medians = [row.median for row in self.captions]
        return (max(medians) - min(medians)) / math.sqrt(len(medians))

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


class Comparison:
    """Rows (vanilla first) against vanilla; what BenchResult and PromptsBenchResult share."""

    rows: list[Any]
    skipped: list[tuple[str, str]]  # (method, why it did not run)
    dropped: Dropped  # peers that failed during the bench; to_dict lists them skipped

    @property
    def vanilla(self) -> Any:
        return self.rows[0]

    def speedup(self, row: Any) -> float:
        return self.vanilla.typical_seconds / row.typical_seconds

    def ideal_speedup(self, row: Any) -> float:
        """vanilla seconds / (vanilla seconds - cached calls x vanilla's mean seconds per transformer call):
        the speedup if skipping a call cost nothing and saved a whole call (over many captions: their means)."""
        saved = (row.total - row.computed) * self.vanilla.seconds_per_call
        remaining = self.vanilla.typical_seconds - saved
        return self.vanilla.typical_seconds / remaining if remaining > 0 else float("inf")

    def efficiency(self, row: Any) -> float:
        return self.speedup(row) / self.ideal_speedup(row)

    def extra_memory_bytes(self, row: Any) -> int | None:
        ours, theirs = row.peak_memory_bytes, self.vanilla.peak_memory_bytes
        return None if ours is None or theirs is None else ours - theirs

    def timing_notes(self) -> list[str]:
        """What a reader should know before trusting the speedups: a single measurement per row, speedups
        within the run-to-run spread, efficiencies above 1 (no cache beats skipping whole calls for free)."""
        if min(row.measurements for row in self.rows) == 1:
            return [
                "each configuration was timed once (--runs 1): its seconds, speedup and efficiency are single "
                "measurements, too noisy to read; --runs 3 or more gives a median and a spread"
            ]
        notes = []
        vanilla = self.vanilla
        cached = [row for row in self.rows[1:] if row.computed < row.total]
        within = [
            row.name
            for row in cached
            if abs(row.typical_seconds - vanilla.typical_seconds) <= row.noise + vanilla.noise
        ]
        if within:
            notes.append(
                f"timing noise: the spread of the runs is as large as the gain of {_some(within)} over vanilla, "
                "so those speedups are within the noise; more --runs or a quieter machine give a steadier reading"
            )
        above = [row.name for row in self.rows[1:] if self.efficiency(row) > 1 and row.name not in within]
        if above:
            notes.append(
                f"efficiency above 1 for {_some(above)}: faster than skipping calls alone explains, so read it as "
                "timing noise"
            )
        return notes

    def _identity(self, row: Any) -> dict[str, Any]:
        return {
            "name": row.name,
            "method": row.config.method,
            "setting": row.config.setting,
            "quantize": row.config.quantize,
        }

    def _gains(self, row: Any) -> dict[str, Any]:
        return {
            "speedup": self.speedup(row),
            "ideal_speedup": self.ideal_speedup(row),
            "efficiency": self.efficiency(row),
        }

    def _memory_and_adaptation(self, row: Any) -> dict[str, Any]:
        return {
            "peak_memory_bytes": row.peak_memory_bytes,
            "extra_memory_bytes": self.extra_memory_bytes(row),
            "adapted_from": row.config.adapted_from,
            "adaptation": row.config.adaptation,
        }

    def _timing(self) -> dict[str, Any]:
        return {
            "transformer_share": self.vanilla.transformer_share,
            "vanilla_seconds_per_transformer_call": self.vanilla.seconds_per_call,
            "psnr_cap": PSNR_CAP,
        }

    def _skipped(self) -> list[dict[str, str]]:
        return [{"method": method, "reason": reason} for method, reason in [*self.skipped, *self.dropped]]


@dataclass
class BenchResult(Comparison):
    rows: list[BenchRow]  # vanilla first
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped: Dropped = field(default_factory=list)

    def row_dict(self, row: BenchRow) -> dict[str, Any]:
        return {
            **self._identity(row),
            "computed": row.computed,
            "cached": row.total - row.computed,
            "total": row.total,
            "seconds": row.seconds,
            "seconds_median": row.median,
            "seconds_spread": row.spread,
            **self._gains(row),
            "psnr": row.quality.psnr_capped,
            "psnr_capped": row.quality.identical,  # identical to vanilla: PSNR is infinite, written as the cap
            "ssim": row.quality.ssim,
            **self._memory_and_adaptation(row),
        }

    def to_dict(self, **header: Any) -> dict[str, Any]:
        return {
            **header,
            **self._timing(),
            "rows": [self.row_dict(row) for row in self.rows],
            "skipped": self._skipped(),
            "timing_notes": self.timing_notes(),
        }


@dataclass
class PromptsBenchResult(Comparison):
    rows: list[PromptsRow]  # vanilla first
    requests: list[GenerationRequest]  # caption i: its prompt, seed + i
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped: Dropped = field(default_factory=list)

    @property
    def calls_per_picture(self) -> int:
        return self.vanilla.total

    def row_dict(self, row: PromptsRow) -> dict[str, Any]:
        from .frontier import summary

        calls = summary([caption.computed for caption in row.captions])
        psnr, ssim = summary(row.values("psnr")), summary(row.values("ssim"))
        identical = sum(caption.quality.identical for caption in row.captions)
        return {
            **self._identity(row),
            "computed": calls["mean"],
            "computed_min": calls["min"],
            "computed_max": calls["max"],
            "cached": row.total - calls["mean"],
            "total": row.total,
            "seconds": [caption.median for caption in row.captions],
            "seconds_mean": row.seconds,
            "relative_seconds": row.seconds / self.vanilla.seconds,
            **self._gains(row),
            **{f"psnr{suffix}": psnr[key] for suffix, key in SPREAD},
            "psnr_capped": bool(row.captions) and identical == len(row.captions),
            "identical_captions": identical,
            **{f"ssim{suffix}": ssim[key] for suffix, key in SPREAD},
            "checker": row.checker,
            **self._memory_and_adaptation(row),
            "per_caption": [
                _caption_dict(index, caption, request)
                for index, (caption, request) in enumerate(zip(row.captions, self.requests))
            ],
        }

    def to_dict(self, at_calls: Sequence[float] = (), **header: Any) -> dict[str, Any]:
        from .frontier import frontier_rows

        rows = [self.row_dict(row) for row in self.rows]
        return {
            **header,
            "prompts": [{"prompt": request.prompt, "seed": request.seed} for request in self.requests],
            "calls_per_picture": self.calls_per_picture,
            **self._timing(),
            "rows": rows,
            "at_calls": list(at_calls),
            "frontier": frontier_rows(rows, at_calls),
            "skipped": self._skipped(),
            "timing_notes": self.timing_notes(),
        }


# A measure over captions in the JSON: its mean, then its spread (key suffix, frontier.summary's key).
SPREAD = (("", "mean"), ("_std", "std"), ("_min", "min"), ("_max", "max"))


def _caption_dict(index: int, caption: BenchRow, request: GenerationRequest) -> dict[str, Any]:
    return {
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


def _some(names: list[str], shown: int = 4) -> str:
    """Up to `shown` names, then how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
