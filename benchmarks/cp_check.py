"""Check that TeaCache decides the same on every rank of one generation under diffusers' context parallelism.

Every rank loads the pipeline, enables context parallelism (Ulysses or ring attention over the ranks),
applies TeaCache with the preset's coefficients (sync_decisions 'auto'), and runs the same prompt and seed;
rank 0 prints each rank's decisions and exits 1 unless they are identical. With --reference every rank
first makes the same generation without parallelism, and the parallel run must also take the decisions of
that single-GPU run and give (nearly) the same pixels.

    torchrun --nproc-per-node 2 benchmarks/cp_check.py --model flux-dev --ulysses 2 --reference
    torchrun --nproc-per-node 2 benchmarks/cp_check.py --model wan2.1-t2v-1.3b --ulysses 2 --steps 30
    torchrun --nproc-per-node 2 benchmarks/cp_check.py --model flux-dev --ring 2 --attention-backend _native_cudnn
    torchrun --nproc-per-node 2 benchmarks/cp_check.py --model tiny-flux --ulysses 2 --cpu --reference  # no GPU

Ulysses needs the attention heads and ring/Ulysses the token count divisible by the degree; ring attention
needs a backend that returns the log-sum-exp (flash, _native_cudnn, _native_flash), not the default native one.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from teacli import apply_teacache, remove_teacache
from teacli.engine.apply import denoisers
from teacli.generation.caching import teacache_configs
from teacli.generation.runner import GenerationRequest, generate
from teacli.models.loading import load_pipeline, resolve_preset

MARKS = {"computed": "C", "cached": ".", "forced": "F"}


def timelines(handle) -> dict[str, str]:
    """Each denoiser/branch's decisions as one line, C computed, . cached, F forced."""
    return {
        f"{module}/{branch}": "".join(MARKS[str(d)] for d in handle.stats.timeline(module, branch))
        for module, branch in handle.stats.branches()
    }


def run(pipe, preset, args) -> dict:
    """One generation under TeaCache: decisions, rel_l1 per call, output pixels, seconds, transformer hooks."""
    handle = apply_teacache(pipe, teacache_configs(preset, thresh=args.thresh))
    hooks = list(pipe.transformer._diffusers_hook._hook_order)
    try:
        request = GenerationRequest.from_preset(
            preset, args.prompt, steps=args.steps, seed=args.seed, height=args.height, width=args.width
        )
        result = generate(pipe, request)
        output = np.asarray(getattr(result.output, "frames", result.output))  # a PIL image or a Video's frames
        distances = [r.rel_l1 for r in handle.stats.records]
        return dict(
            decisions=timelines(handle),
            distances=distances,
            output=output.astype(np.float32),
            seconds=result.seconds,
            hooks=hooks,
        )
    finally:
        remove_teacache(pipe)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flux-dev", help="a teacli preset, preset file or pipeline")
    parser.add_argument("--prompt", default="a red fox in the snow, photograph")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--thresh", type=float)
    parser.add_argument("--ulysses", type=int, default=1, help="Ulysses degree")
    parser.add_argument("--ring", type=int, default=1, help="ring degree")
    parser.add_argument("--anything", action="store_true", help="ulysses_anything/ring_anything: any token count")
    parser.add_argument("--attention-backend", help="e.g. flash, _native_cudnn (ring needs one of these)")
    parser.add_argument("--reference", action="store_true", help="compare with a run without parallelism")
    parser.add_argument("--allow-pickle", action="store_true", help="load .bin weights (trusted models only)")
    parser.add_argument("--cpu", action="store_true", help="gloo on CPU processes, fp32 (tiny models)")
    args = parser.parse_args()

    from diffusers import ContextParallelConfig

    if args.cpu:
        # diffusers picks the device as rank % torch.accelerator.device_count(), which is 0 without one.
        torch.accelerator.device_count = lambda: 1
        device, dtype, backend = torch.device("cpu"), torch.float32, "gloo"
    else:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device, dtype, backend = torch.device("cuda", local_rank), torch.bfloat16, "nccl"
    dist.init_process_group(backend, timeout=timedelta(minutes=10))
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        preset = resolve_preset(args.model)
        pipe = load_pipeline(preset, device, dtype, allow_pickle=args.allow_pickle)
        reference = run(pipe, preset, args) if args.reference else None

        for transformer in denoisers(pipe).values():  # both experts of Wan 2.2
            if args.attention_backend:
                transformer.set_attention_backend(args.attention_backend)
            transformer.enable_parallelism(
                config=ContextParallelConfig(
                    ring_degree=args.ring,
                    ulysses_degree=args.ulysses,
                    ulysses_anything=args.anything and args.ulysses > 1,
                    ring_anything=args.anything and args.ring > 1,
                )
            )
        parallel = run(pipe, preset, args)
        gathered = [None] * world
        dist.all_gather_object(gathered, {key: parallel[key] for key in ("decisions", "distances", "seconds")})
        if rank != 0:
            return 0
        print(
            f"{preset.name}: {world} ranks, ring {args.ring} x ulysses {args.ulysses}; transformer hooks "
            f"(innermost first): {parallel['hooks']}"
        )
        failures = []
        for other, seen in enumerate(gathered):
            for branch, line in seen["decisions"].items():
                print(f"rank {other} {branch:24} {line}  ({seen['seconds']:.2f} s)")
            if seen["decisions"] != gathered[0]["decisions"]:
                failures.append(f"rank {other} decided differently from rank 0")
            if seen["distances"] != gathered[0]["distances"]:
                failures.append(f"rank {other} measured other rel_l1 values than rank 0")
        if reference is not None:
            for branch, line in reference["decisions"].items():
                print(f"one GPU {branch:24} {line}  ({reference['seconds']:.2f} s)")
            if reference["decisions"] != parallel["decisions"]:
                failures.append("the parallel run decided differently from the one-GPU run")
            pairs = zip(parallel["distances"], reference["distances"])
            worst = max((abs(a - b) / max(b, 1e-9) for a, b in pairs if a is not None and b is not None), default=0.0)
            difference = float(np.abs(parallel["output"] - reference["output"]).mean())
            print(f"rel_l1 vs one GPU: largest relative difference {worst:.2e}; mean pixel difference {difference:.3f}")
        print("FAIL: " + "; ".join(failures) if failures else "OK: identical decisions on every rank")
        return 1 if failures else 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
