"""What one cached transformer call costs under each policy: TeaCache's rule, a plan reusing the residual,
and a plan forecasting it.

A cached call still runs the embeddings, the output head and the hook's own work. TeaCache's rule also
measures rel_l1 of the modulated input; a plan measures nothing, and a forecast adds one multiply-add of
the residual. This times the transformer alone on the inputs of a real call (the timestep moved each call,
so a forecast has a slope), the three policies interleaved round by round in a shuffled order, and prints
the median seconds of their cached calls and the ratios to the rule's.

    python benchmarks/cached_call_cost.py --model bench-flux --rounds 20
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hook_overhead import captured_call  # noqa: E402

from teacli import TeaCacheConfig, apply_teacache  # noqa: E402
from teacli.engine.plan import Plan  # noqa: E402
from teacli.models.loading import load_pipeline, resolve_preset  # noqa: E402

STEPS = 12  # calls per round: the first (and for the forecast the second) computes, the last is forced


@torch.no_grad()
def cached_seconds(transformer, kwargs, config) -> list[float]:
    """One round of STEPS calls on a bare transformer; the seconds of the calls the hook cached."""
    seconds = []
    with apply_teacache(transformer, config) as handle:
        for step in range(STEPS):
            timestep = torch.full_like(kwargs["timestep"], 1.0 - step / STEPS)
            started = time.perf_counter()
            transformer(**{**kwargs, "timestep": timestep})
            seconds.append(time.perf_counter() - started)
        cached = [r.decision.value == "cached" for r in handle.stats.records]
    return [s for s, was_cached in zip(seconds, cached) if was_cached]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench-flux")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    preset = resolve_preset(args.model)
    pipe = load_pipeline(preset, torch.device("cpu"), torch.float32)
    kwargs = captured_call(pipe, preset)
    configs = {
        "rule (thresh 1e9)": TeaCacheConfig(thresh=1e9, coefficients=preset.coefficients, num_inference_steps=STEPS),
        "plan, reuse": TeaCacheConfig(plan=Plan(STEPS, (0, 1, STEPS - 1)), num_inference_steps=STEPS),
        "plan, forecast": TeaCacheConfig(plan=Plan(STEPS, (0, 1, STEPS - 1), (1,)), num_inference_steps=STEPS),
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    for config in configs.values():  # warm-up
        cached_seconds(pipe.transformer, kwargs, config)
    order = list(configs)
    shuffle = random.Random(0)
    for _ in range(args.rounds):
        shuffle.shuffle(order)  # no policy always runs first (or right after another) in a round
        for name in order:
            times[name] += cached_seconds(pipe.transformer, kwargs, configs[name])
    rule = statistics.median(times["rule (thresh 1e9)"])
    print(f"{args.model}: median seconds of a cached call over {args.rounds} rounds, interleaved")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:18s} {median * 1e3:8.3f} ms  x{median / rule:.3f} of the rule's  ({len(values)} calls)")


if __name__ == "__main__":
    main()
