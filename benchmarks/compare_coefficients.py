"""Do calibrated coefficients beat borrowed ones? PSNR against the uncached image at equal work.

For each prompt, each preset's coefficients run over a grid of thresholds; every threshold gives
some number of computed transformer calls and a PSNR against the uncached image (same seed).
Where both presets reach the same number of computed calls (taking, for each count, the smallest
threshold that reaches it), their PSNRs are compared: at equal work, higher is closer.

    python benchmarks/compare_coefficients.py --model tiny-flux --against tiny-flux-calibrated.yaml

Prompts default to a held-out set (not among the built-in calibration prompts), seeds 1000, 1001, ...;
`--prompts-file` takes others (for teacli-shapes: `python -m teacli.demo.shapes --seed 99 --count 12`).
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from teacli.batch.prompts import read_prompts
from teacli.engine.apply import apply_teacache
from teacli.generation.caching import teacache_configs
from teacli.generation.measure import quality
from teacli.generation.runner import GenerationRequest, generate
from teacli.models.loading import load_pipeline, resolve_preset

HELD_OUT = (
    "a lone tree on a hill under the milky way",
    "a bowl of cherries on a checkered tablecloth",
    "a robot reading a newspaper in a park",
    "a sailboat on a calm sea at dawn, pastel colours",
    "a mosaic of a turtle made of blue and green tiles",
    "an old typewriter with a page that says 'chapter one'",
)
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 41))  # 0.05 ... 2.0


@dataclass(frozen=True)
class Point:
    prompt: int
    computed: int
    thresh: float
    psnr: float


def sweep(pipe, preset, request: GenerationRequest, baseline, thresholds) -> dict[int, Point]:
    """computed calls -> the point of the smallest threshold that computed that many."""
    points: dict[int, Point] = {}
    for thresh in thresholds:
        handle = apply_teacache(pipe, teacache_configs(preset, thresh))
        try:
            output = generate(pipe, request).output
        finally:
            handle.remove()
        computed = handle.stats.computed
        points.setdefault(computed, Point(request.seed, computed, thresh, quality(output, baseline).psnr))
    return points


def compare(model: str, against: str, prompts, steps: int | None, thresholds=THRESHOLDS, seed: int = 1000):
    base, other = resolve_preset(model), resolve_preset(against)
    pipe = load_pipeline(base, torch.device("cpu"), torch.float32)
    by_count: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        request = GenerationRequest.from_preset(base, prompt, steps=steps, seed=seed + index)
        baseline = generate(pipe, request).output
        ours, theirs = (sweep(pipe, p, request, baseline, thresholds) for p in (base, other))
        for computed in sorted(set(ours) & set(theirs)):
            if computed < request.steps:  # equal work with something cached
                by_count[computed].append((ours[computed].psnr, theirs[computed].psnr))
    return base, other, by_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-flux", help="the preset with the coefficients to beat")
    parser.add_argument("--against", required=True, help="a preset (file) with other coefficients, same model")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--prompts", type=int, default=len(HELD_OUT), help="how many prompts to use")
    parser.add_argument("--prompts-file", help="prompts, one a line, in place of the held-out set")
    args = parser.parse_args()
    prompts = read_prompts(Path(args.prompts_file)) if args.prompts_file else HELD_OUT
    base, other, by_count = compare(args.model, args.against, prompts[: args.prompts], args.steps)

    print("PSNR (dB) against the uncached image at equal computed calls, mean over prompts reaching that count")
    print(f"A: {base.name} ({base.coefficients_source})")
    print(f"B: {args.against} ({other.coefficients_source})")
    print(f"{'computed':>8} {'prompts':>7} {'PSNR A':>8} {'PSNR B':>8} {'B - A':>7} {'B wins':>6}")
    differences = []
    for computed, pairs in sorted(by_count.items()):
        a = statistics.mean(p[0] for p in pairs)
        b = statistics.mean(p[1] for p in pairs)
        wins = sum(p[1] > p[0] for p in pairs)
        differences.extend(p[1] - p[0] for p in pairs)
        print(f"{computed:>8} {len(pairs):>7} {a:>8.2f} {b:>8.2f} {b - a:>+7.2f} {wins:>3}/{len(pairs)}")
    if differences:
        better = sum(d > 0 for d in differences)
        print(
            f"over {len(differences)} (prompt, computed) pairs: B closer in {better}, "
            f"mean difference {statistics.mean(differences):+.2f} dB, median {statistics.median(differences):+.2f} dB"
        )


if __name__ == "__main__":
    main()
