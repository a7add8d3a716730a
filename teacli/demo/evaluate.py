"""Score teacli-shapes with the checker, uncached and at TeaCache thresholds, and pick a default.

    python -m teacli.demo.evaluate --thresh 0.1,0.2,0.3,0.4,0.6 [--model teacli-shapes-fine] [--json F] [--strip F.png]

Caption i of the fixed evaluation set is generated with seed i. Every threshold is scored against
the captions (background colour, shape colour, shape) and against the uncached pictures (PSNR,
SSIM); the recommended default is the largest threshold whose three scores all stay within
`--tolerance` points of the uncached ones.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from teacli.demo.checker import Scores, read, score
from teacli.demo.shapes import Caption, evaluation_captions
from teacli.generation.output import save_json, write_atomic

DEFAULT_MODEL = "teacli-shapes"
SCORE_KEYS = ("background", "color", "shape")


@dataclass
class SweepRow:
    thresh: float | None  # None: uncached
    scores: Scores
    computed: int
    calls: int
    seconds: float
    psnr: float | None = None  # mean over pictures, against the uncached ones; None for uncached
    ssim: float | None = None
    images: list = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        return "uncached" if self.thresh is None else f"teacache@{self.thresh:g}"

    def to_dict(self, baseline: SweepRow) -> dict:
        return {
            "config": self.label,
            "thresh": self.thresh,
            **{f"score_{k}": v for k, v in self.scores.to_dict().items()},
            "computed": self.computed,
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "speedup": round(baseline.seconds / self.seconds, 3),
            "psnr": self.psnr,
            "ssim": self.ssim,
        }


def run_sweep(pipe, preset, captions: Sequence[Caption], thresholds: Sequence[float], steps: int) -> list[SweepRow]:
    """The uncached row first (no hook at all), then one row per threshold."""
    from teacli import apply_teacache
    from teacli.generation.caching import teacache_configs

    baseline = _row(pipe, preset, captions, steps, None, None)
    rows = [baseline]
    for thresh in thresholds:
        with apply_teacache(pipe, teacache_configs(preset, thresh)) as handle:
            rows.append(_row(pipe, preset, captions, steps, thresh, handle, baseline))
    return rows


def _row(pipe, preset, captions, steps, thresh, handle, baseline: SweepRow | None = None) -> SweepRow:
    from teacli.generation.measure import quality
    from teacli.generation.runner import GenerationRequest, generate

    images, seconds, computed, calls = [], 0.0, 0, 0
    forwards = []  # uncached: every transformer call computes (two a step with true CFG)
    counting = pipe.transformer.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        for seed, caption in enumerate(captions):
            request = GenerationRequest.from_preset(preset, str(caption), steps=steps, seed=seed)
            if handle is not None:
                handle.reset()
            result = generate(pipe, request)
            images.append(result.output)
            seconds += result.seconds
            if handle is not None:
                totals = handle.stats.totals
                computed, calls = computed + totals.executed, calls + totals.calls
    finally:
        counting.remove()
    if handle is None:
        computed = calls = len(forwards)
    scores = score(zip(captions, (read(image) for image in images)))
    row = SweepRow(thresh, scores, computed, calls, seconds, images=images)
    if baseline is not None:
        measured = [quality(image, reference) for image, reference in zip(images, baseline.images)]
        row.psnr = round(sum(q.psnr_capped for q in measured) / len(measured), 2)
        row.ssim = round(sum(q.ssim for q in measured) / len(measured), 4)
    return row


def recommended_threshold(rows: Sequence[SweepRow], tolerance: float = 2.0) -> float | None:
    """The largest threshold whose scores all stay within `tolerance` points of the uncached row's."""
    baseline = rows[0].scores
    keeping = [
        row.thresh
        for row in rows[1:]
        if all(
            getattr(baseline, key) - getattr(row.scores, key) <= tolerance for key in ("background", "color", "shape")
        )
    ]
    return max(keeping, default=None)


def strip(rows: Sequence[SweepRow], columns: int = 8, scale: int = 2) -> Image.Image:
    """A grid of pictures: one row per configuration, labelled, the first `columns` captions."""
    label_width, size = 120, 64 * scale
    sheet = Image.new("RGB", (label_width + columns * size, len(rows) * size), "white")
    pen = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        text = row.label if row.thresh is None else f"{row.label}\n{row.computed}/{row.calls} computed"
        pen.multiline_text((6, r * size + size // 2 - 12), text, fill="black")
        for c, image in enumerate(row.images[:columns]):
            sheet.paste(image.resize((size, size), Image.NEAREST), (label_width + c * size, r * size))
    return sheet


def print_table(rows: Sequence[SweepRow], model: str = DEFAULT_MODEL) -> None:
    from rich.console import Console
    from rich.table import Table

    baseline = rows[0]
    table = Table(title=f"{model}: checker scores on {baseline.scores.count} captions")
    for column in ("config", "background %", "colour %", "shape %", "computed", "PSNR dB", "SSIM", "speedup"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for row in rows:
        s = row.scores
        table.add_row(
            row.label,
            f"{s.background:g}",
            f"{s.color:g}",
            f"{s.shape:g}",
            f"{row.computed}/{row.calls}",
            "-" if row.psnr is None else f"{row.psnr:.2f}",
            "-" if row.ssim is None else f"{row.ssim:.4f}",
            f"{baseline.seconds / row.seconds:.2f}x",
        )
    Console().print(table)


def parse(values: str) -> list[float]:
    try:
        return sorted(float(value) for value in values.split(","))
    except ValueError:
        raise ValueError(f"{values!r} is not a comma-separated list of thresholds, e.g. 0.1,0.2,0.4") from None


def save_png(image: Image.Image, path: Path) -> None:
    write_atomic(path, lambda temporary: image.save(temporary, format="PNG"), overwrite=True)  # docs' figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m teacli.demo.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="teacli-shapes, teacli-shapes-fine or a preset file")
    parser.add_argument("--thresh", default="0.1,0.2,0.3,0.4,0.6", help="comma-separated TeaCache thresholds")
    parser.add_argument("--count", type=int, default=100, help="captions to score (default 100)")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--tolerance", type=float, default=2.0, help="points of score a threshold may lose")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--strip", type=Path, help="write a PNG of sample pictures, uncached and cached, here")
    parser.add_argument(
        "--strip-thresh", help="thresholds shown in --strip (default: the recommended one and the largest swept)"
    )
    args = parser.parse_args(argv)
    try:
        thresholds = parse(args.thresh)
        if args.strip_thresh is not None:
            parse(args.strip_thresh)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.count < 1 or args.steps < 2:
        print("error: --count must be at least 1 and --steps at least 2", file=sys.stderr)
        return 1

    import torch

    from teacli.models.loading import load_pipeline, resolve_preset

    try:
        preset = resolve_preset(args.model)
        pipe = load_pipeline(preset, torch.device("cpu"), torch.float32)
    except ValueError as error:  # PresetError, ModelError: one line saying what to fix
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = run_sweep(pipe, preset, evaluation_captions(args.count), thresholds, args.steps)
    print_table(rows, preset.name)
    chosen = recommended_threshold(rows, args.tolerance)
    print(f"recommended default threshold: {chosen} (largest within {args.tolerance:g} points of uncached)")
    if args.json:
        payload = {
            "model": preset.name,
            "steps": args.steps,
            "captions": args.count,
            "coefficients_source": preset.coefficients_source,
            "recommended": chosen,
            "rows": [row.to_dict(rows[0]) for row in rows],
        }
        save_json(payload, args.json, overwrite=True)
    if args.strip:
        shown = {chosen, thresholds[-1]} if args.strip_thresh is None else set(parse(args.strip_thresh))
        save_png(strip([rows[0], *(row for row in rows[1:] if row.thresh in shown)]), args.strip)
    return 0


if __name__ == "__main__":
    sys.exit(main())
