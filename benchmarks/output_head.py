"""Where the cached residual of LTX-Video and Mochi should end: before the output head (teacli) or after it
(the reference TeaCache4LTX-Video and TeaCache4Mochi, norm_out and its timestep modulation included).

Decisions are the same either way; only what a cached call returns differs. teacli reuses the blocks' residual
and applies the head with the current call's timestep; the reference reuses the head's output residual, so a
cached call keeps the head modulation of the computed call's timestep. This measures, on tiny random-weight
models driven through a real schedule:

1. cached-call error: for every pair of calls (computed at step a, reused at step a + gap) of an uncached run,
   the relative L1 distance of each way's cached output from the output computing would have given;
2. final output: PSNR of a whole cached generation against the uncached one, at a few thresholds (tiny-ltx
   through LTXPipeline, decoded frames; Mochi through an Euler loop of MochiPipeline's schedule, latents).

    python benchmarks/output_head.py --steps 12
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
from diffusers import MochiTransformer3DModel
from diffusers.pipelines.mochi.pipeline_mochi import linear_quadratic_schedule
from teacli.extractors.ltx import extract_ltx_context, extract_ltx_context_residual_after_head
from teacli.extractors.mochi import extract_mochi_context, extract_mochi_context_residual_after_head

from teacli import TeaCacheConfig, apply_teacache
from teacli.engine.registry import register_extractor
from teacli.models.loading import load_pipeline, resolve_preset

THRESHOLDS = (0.1, 0.2, 0.3)
GAPS = (1, 2)
COEFFICIENTS = (1.0, 0.0)  # the raw rel_l1: random weights have no fitted coefficients


def ways(before: Callable, after: Callable) -> dict[str, Callable]:
    return {"before head (teacli)": before, "after head (reference)": after}


def relative_error(actual: torch.Tensor, wanted: torch.Tensor) -> float:
    return float((actual - wanted).abs().mean() / wanted.abs().mean())


def psnr(actual: torch.Tensor, wanted: torch.Tensor) -> float:
    peak = float(wanted.max() - wanted.min())
    mse = float((actual - wanted).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def sample_of(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


@torch.no_grad()
def cached_call_errors(transformer, calls: list[dict], extractor: Callable, gap: int) -> float:
    """Mean relative error of a call reusing the residual of the call `gap` steps before it."""
    errors = []
    for first, second in zip(calls, calls[gap:]):
        computed = extractor(transformer, **first)
        residuals = [out - s for out, s in zip(computed.run_transformer_blocks(), computed.streams)]
        reused = extractor(transformer, **second)
        cached = sample_of(reused.postprocess(*(s + r for s, r in zip(reused.streams, residuals))))
        errors.append(relative_error(cached, sample_of(transformer(**second))))
    return sum(errors) / len(errors)


def capture_calls(transformer, run: Callable[[], torch.Tensor]) -> tuple[list[dict], torch.Tensor]:
    """Every transformer call's arguments in an uncached run, and the run's output."""
    calls = []

    def keep(_module, _args, kwargs):
        calls.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})

    handle = transformer.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        output = run()
    finally:
        handle.remove()
    return calls, output


def cached_run(target, class_name: str, extractor: Callable, thresh: float, run: Callable, **config) -> tuple:
    """A generation with `extractor` standing in for the built-in one; its output and cached-call count."""
    register_extractor(class_name, extractor, lora_kwargs="attention_kwargs")
    with apply_teacache(target, TeaCacheConfig(thresh=thresh, coefficients=COEFFICIENTS, **config)) as handle:
        output = run()
        cached = sum(r.decision.value == "cached" for r in handle.stats.records)
    return output, cached


def report(name: str, transformer, class_name: str, target, run: Callable, both: dict, builtin, **config) -> None:
    calls, uncached = capture_calls(transformer, run)
    print(f"\n{name}: {len(calls)} calls")
    for gap in GAPS:
        cells = ", ".join(f"{way} {cached_call_errors(transformer, calls, fn, gap):.4f}" for way, fn in both.items())
        print(f"  cached-call rel. L1 error, reuse after {gap} step(s): {cells}")
    try:
        for thresh in THRESHOLDS:
            cells = []
            for way, fn in both.items():
                output, cached = cached_run(target, class_name, fn, thresh, run, **config)
                cells.append(f"{way} {psnr(output, uncached):.2f} dB")
            print(f"  thresh {thresh}: {cached}/{len(calls)} cached; final PSNR vs uncached: {', '.join(cells)}")
    finally:
        register_extractor(class_name, builtin, lora_kwargs="attention_kwargs")


def ltx(steps: int) -> None:
    pipe = load_pipeline(resolve_preset("tiny-ltx"), torch.device("cpu"), torch.float32)

    def run() -> torch.Tensor:
        return pipe(
            prompt="an owl on a tree",
            negative_prompt="blurry dark",
            num_frames=9,
            height=32,
            width=32,
            num_inference_steps=steps,
            max_sequence_length=16,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).frames

    both = ways(extract_ltx_context, extract_ltx_context_residual_after_head)
    report(
        "tiny-ltx (LTXPipeline, CFG batched)",
        pipe.transformer,
        "LTXVideoTransformer3DModel",
        pipe,
        run,
        both,
        extract_ltx_context,
    )


def tiny_mochi() -> MochiTransformer3DModel:
    torch.manual_seed(0)
    model = MochiTransformer3DModel(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=4,
        pooled_projection_dim=16,
        in_channels=4,
        text_embed_dim=24,
        time_embed_dim=16,
        max_sequence_length=6,
    )
    torch.nn.init.normal_(model.pos_frequencies, std=0.5)  # learned in the checkpoint; zeros make RoPE the identity
    return model.eval()


def mochi(steps: int) -> None:
    model = tiny_mochi()
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(1, 4, 3, 8, 8, generator=generator)
    text = torch.randn(1, 6, 24, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    # MochiPipeline's sigmas (linear then quadratic, threshold noise 0.025); it passes timesteps 1000 * (1 - sigma).
    sigmas = [*linear_quadratic_schedule(steps, 0.025), 0.0]

    @torch.no_grad()
    def run() -> torch.Tensor:
        latents = start.clone()
        for sigma, following in zip(sigmas, sigmas[1:]):
            timestep = torch.tensor([1000.0 * (1 - sigma)])
            velocity = model(
                hidden_states=latents,
                encoder_hidden_states=text,
                timestep=timestep,
                encoder_attention_mask=mask,
                return_dict=False,
            )[0]
            latents = latents + (following - sigma) * velocity
        return latents

    both = ways(extract_mochi_context, extract_mochi_context_residual_after_head)
    report(
        "tiny Mochi (Euler on MochiPipeline's schedule, no CFG)",
        model,
        "MochiTransformer3DModel",
        model,
        run,
        both,
        extract_mochi_context,
        num_inference_steps=steps,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    ltx(args.steps)
    mochi(args.steps)


if __name__ == "__main__":
    main()
