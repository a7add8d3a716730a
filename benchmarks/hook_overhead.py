"""The TeaCache hook's own cost per transformer call, on fixed inputs, with every call computed.

A whole generation on a CPU varies by several percent from run to run, more than the hook costs;
this times the transformer alone on the inputs of a real call, unhooked and hooked at threshold 0,
alternating, so the ratio isolates what the hook adds (extractor, decision, residual bookkeeping);
and it times cached calls, whose cost bounds the hook's from above without the blocks' noise.

    python benchmarks/hook_overhead.py --model bench-flux --repeats 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from teacli import TeaCacheConfig, apply_teacache
from teacli.generation.counting import block_lists
from teacli.generation.runner import GenerationRequest, generate
from teacli.models.loading import load_pipeline, resolve_preset


def captured_call(pipe, preset) -> dict:
    """The keyword arguments of the transformer's first call in a real 2-step generation."""
    captured = {}

    def keep(_module, _args, kwargs) -> None:
        captured.setdefault("kwargs", kwargs)

    handle = pipe.transformer.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        generate(pipe, GenerationRequest.from_preset(preset, "a red circle on a blue background", steps=2))
    finally:
        handle.remove()
    return captured["kwargs"]


@torch.no_grad()
def timed(transformer, kwargs) -> float:
    started = time.perf_counter()
    transformer(**kwargs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench-flux")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    preset = resolve_preset(args.model)
    pipe = load_pipeline(preset, torch.device("cpu"), torch.float32)
    kwargs = captured_call(pipe, preset)
    transformer = pipe.transformer
    config = TeaCacheConfig(thresh=0.0, coefficients=preset.coefficients)
    plain, hooked = [], []
    timed(transformer, kwargs)  # warm-up
    for _ in range(args.repeats):
        plain.append(timed(transformer, kwargs))
        handle = apply_teacache(transformer, config)
        # Two calls per hooking: the first has no previous input, the second measures rel_l1 as every later call does.
        hooked.append(timed(transformer, kwargs))
        hooked.append(timed(transformer, kwargs))
        handle.remove()
        plain.append(timed(transformer, kwargs))
    # A cached call runs everything but the blocks: the hook's own work plus the model's embeddings and
    # output layers, which a computed call runs too. Its time bounds the hook's cost from above.
    cached = []
    with apply_teacache(transformer, TeaCacheConfig(thresh=1e9, coefficients=preset.coefficients)) as handle:
        for _ in range(args.repeats + 1):
            cached.append(timed(transformer, kwargs))
        assert handle.stats.totals.cached == args.repeats
    cached = cached[1:]  # the first call computes
    # The same model's work outside the blocks, unhooked, for comparison: every block list emptied for a moment.
    lists = {name: blocks for name, blocks in block_lists(transformer)}
    outside = []
    try:
        for name in lists:
            setattr(transformer, name, torch.nn.ModuleList())
        for _ in range(args.repeats):
            outside.append(timed(transformer, kwargs))
    finally:
        for name, blocks in lists.items():
            setattr(transformer, name, blocks)
    unhooked, with_hook = statistics.median(plain), statistics.median(hooked)
    print(
        f"{args.model}: transformer call unhooked {unhooked * 1000:.2f} ms, "
        f"hooked at thresh 0 {with_hook * 1000:.2f} ms"
    )
    print(f"overhead: {with_hook / unhooked - 1:+.2%} per call (medians of {len(plain)} and {len(hooked)} calls)")
    bound, rest = statistics.median(cached), statistics.median(outside)
    print(
        f"a cached call: {bound * 1000:.2f} ms = {bound / unhooked:.2%} of an unhooked call "
        "(upper bound on the hook's own cost: it includes the model's embedding and output layers)"
    )
    print(
        f"the unhooked model outside its blocks: {rest * 1000:.2f} ms = {rest / unhooked:.2%} of a call "
        "(a cached call skips what only the blocks need, such as the rotary embedding, so it can cost less)"
    )


if __name__ == "__main__":
    main()
