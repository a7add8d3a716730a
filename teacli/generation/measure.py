"""Measuring one generation: wall-clock seconds, peak memory, and quality against a reference.

`teacli bench` and `teacli generate --compare-baseline` both measure through this module, so a
figure means the same in both.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

# PSNR of identical outputs is infinite; JSON and plots get this many dB instead, flagged as capped.
PSNR_CAP = 100.0
RSS_SAMPLE_SECONDS = 0.002


@dataclass(frozen=True)
class Quality:
    """How close an output is to the reference: PSNR in dB (inf when identical) and SSIM in [-1, 1]."""

    psnr: float | None
    ssim: float | None

    @property
    def identical(self) -> bool:
        return self.psnr is not None and math.isinf(self.psnr)

    @property
    def psnr_capped(self) -> float | None:
        """PSNR with infinity replaced by PSNR_CAP, for JSON and plots."""
        return None if self.psnr is None else min(self.psnr, PSNR_CAP)


def quality(output: Any, reference: Any) -> Quality:
    """PSNR and SSIM (torchmetrics) of an image or video against the reference; None for sound or a
    shape mismatch, which have no pixel-wise comparison."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    from .media import media_tensor

    ours, theirs = media_tensor(output), media_tensor(reference)
    if ours is None or theirs is None or ours.shape != theirs.shape:
        return Quality(None, None)
    psnr = float(peak_signal_noise_ratio(ours, theirs, data_range=1.0))
    # SSIM's Gaussian window needs a few pixels; a frame smaller than it has no SSIM.
    ssim = (
        float(structural_similarity_index_measure(ours, theirs, data_range=1.0)) if min(ours.shape[-2:]) >= 11 else None
    )
    return Quality(psnr, ssim)


class PeakMemory:
    """The peak memory of one run: CUDA max allocated on a CUDA device, else the process's resident set
    size, sampled by a thread (the OS's own peak, ru_maxrss, never goes down, so it cannot tell runs apart)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes: int | None = None
        self._stop = threading.Event()

    @contextmanager
    def watch(self) -> Iterator[PeakMemory]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield self
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        import psutil

        process = psutil.Process()
        peak = [process.memory_info().rss]

        def sample() -> None:
            while not self._stop.wait(RSS_SAMPLE_SECONDS):
                peak[0] = max(peak[0], process.memory_info().rss)

        self._stop.clear()
        sampler = threading.Thread(target=sample, name="teacli-rss", daemon=True)
        sampler.start()
        try:
            yield self
        finally:
            self._stop.set()
            sampler.join()
            self.peak_bytes = max(peak[0], process.memory_info().rss)


@dataclass
class Run:
    """One measured generation."""

    output: Any
    seconds: float
    computed: int  # transformer calls that ran the blocks
    total: int  # transformer calls
    transformer_seconds: float  # wall time inside transformer calls
    peak_memory_bytes: int | None
    outputs: list[Any] = field(default_factory=list)  # every output of a --num-images batch; output is the first


def measure_generation(pipe: Any, request: Any, computed: Any = None, on_step: Any = None) -> Run:
    """Generate once, timing the whole call and the transformer calls within it, and watching memory.

    `computed`, when given, is a callable returning (computed, total) after the run (TeaCache's own
    records); otherwise the counts come from the transformer call counter.
    """
    from .counting import count_transformer_calls
    from .runner import generate

    memory = PeakMemory(pipe.device)
    with count_transformer_calls(pipe) as counter, memory.watch():
        result = generate(pipe, request, on_step=on_step)
    executed, total = computed() if computed is not None else (counter.computed, counter.total)
    return Run(
        result.output, result.seconds, executed, total, counter.seconds, memory.peak_bytes, outputs=result.outputs
    )


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
