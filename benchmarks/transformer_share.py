"""How much of a generation is spent inside the transformer: parameters, seconds a generation, share.

A cache can only save the time of the transformer calls it skips, so on a model whose text encoders,
VAE or Python overhead take a large part of the time, even a perfect cache speeds little up. This
loads a preset the way `teacli generate` does (resolve_preset + load_pipeline), times every forward
of its transformer(s) with forward pre/post hooks, and divides their sum by the time of the whole
pipe() call, for each of --runs seeded generations after --warmup unmeasured ones.

    python benchmarks/transformer_share.py --model bench-flux --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from teacli.engine.apply import denoisers
from teacli.engine.devices import synchronize
from teacli.generation.runner import GenerationRequest, generate
from teacli.models.loading import load_pipeline, pick_device, pick_dtype, resolve_preset

PROMPT = "a red apple on a wooden table, soft window light"


class TransformerTimer:
    """Sums the wall time of every forward of the given modules (synchronising the device around each)."""

    def __init__(self, modules: dict[str, torch.nn.Module], device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self.calls = 0
        self._started: float | None = None
        self._handles = []
        for module in modules.values():
            self._handles.append(module.register_forward_pre_hook(self._before))
            self._handles.append(module.register_forward_hook(self._after))

    def _before(self, _module, _args) -> None:
        synchronize(self.device)
        self._started = time.perf_counter()

    def _after(self, _module, _args, _output) -> None:
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._started
        self.calls += 1

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def measure(model: str, runs: int, warmup: int, steps: int | None, device: str, dtype: str) -> None:
    preset = resolve_preset(model)
    torch_device = pick_device(device)
    pipe = load_pipeline(preset, torch_device, pick_dtype(dtype, torch_device))
    modules = denoisers(pipe)
    request = GenerationRequest.from_preset(preset, PROMPT, steps=steps)
    size = f"{request.width}x{request.height}" if request.width and request.height else "default size"
    print(
        f"{preset.name} ({preset.model}), {preset.pipeline}, {torch_device} {pipe.dtype}, "
        f"{torch.get_num_threads()} torch threads; {size}, {request.steps} steps"
    )
    for name, module in modules.items():
        count = sum(parameter.numel() for parameter in module.parameters())
        print(f"{name}: {type(module).__name__}, {count:,} parameters ({count / 1e6:.2f}M)")

    timer = TransformerTimer(modules, torch_device)
    totals, shares = [], []
    try:
        for index in range(warmup + runs):
            timer.reset()
            total = generate(pipe, request).seconds
            label = f"warmup {index + 1}" if index < warmup else f"run {index - warmup + 1}"
            print(
                f"{label}: {total:.3f} s, {timer.calls} transformer calls {timer.seconds:.3f} s "
                f"({timer.seconds / total:.1%})"
            )
            if index >= warmup:
                totals.append(total)
                shares.append(timer.seconds / total)
    finally:
        timer.remove()
    print(
        f"median of {runs}: {statistics.median(totals):.3f} s a generation (min {min(totals):.3f}, "
        f"max {max(totals):.3f}); transformer share {statistics.median(shares):.1%} "
        f"(min {min(shares):.1%}, max {max(shares):.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench-flux", help="a preset name or preset file (default bench-flux)")
    parser.add_argument("--runs", type=int, default=5, help="measured generations (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured generations first (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    measure(args.model, args.runs, args.warmup, args.steps, args.device, args.dtype)


if __name__ == "__main__":
    main()
