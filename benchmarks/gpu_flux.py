"""Part 2 of the device check: a FLUX.1-dev-shaped transformer with random weights, called as FluxPipeline calls it.

The real FluxTransformer2DModel configuration (black-forest-labs/FLUX.1-dev, transformer/config.json: 19 double- and
38 single-stream blocks, 24 heads of 128, T5 width 4096, CLIP pooled 768, guidance embedding, rotary axes 16/56/56),
at 1024x1024 (4096 packed latent tokens, 512 T5 tokens) for 28 flow-matching Euler steps with FLUX's resolution
shift. Rows: vanilla, teacache at 0 (the hook's overhead) and at 0.25 / 0.4 / 0.6, eager and with regional
torch.compile, a few with the transformer's blocks offloaded to the CPU (diffusers' group offloading), and a few on
a second copy with torchao int8 weights (what `--quantize torchao-int8` loads: peak memory and speed of the
24 GB recipe's transformer).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from teacli import TeaCacheConfig
from teacli.engine.apply import apply_teacache
from teacli.engine.compile import compile_transformer_blocks, uncompile_transformer_blocks

# ali-vilab/TeaCache TeaCache4FLUX (presets/flux-dev.yaml).
FLUX_COEFFICIENTS = (4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01)
FLUX_DEV_CONFIG = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
SMOKE_CONFIG = dict(FLUX_DEV_CONFIG, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16)
SMOKE_CONFIG.update(num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))


@dataclass(frozen=True)
class Shape:
    config: dict
    height: int = 1024
    width: int = 1024
    text_tokens: int = 512  # FluxPipeline's max_sequence_length for dev
    steps: int = 28
    guidance: float = 3.5

    @property
    def grid(self) -> tuple[int, int]:
        # VAE downsamples by 8, then 2x2 patches are packed into one token.
        return self.height // 16, self.width // 16


FULL = Shape(FLUX_DEV_CONFIG)
SMOKE = Shape(SMOKE_CONFIG, height=64, width=64, text_tokens=8, steps=6)


@dataclass
class Row:
    name: str
    thresh: float | None  # None: no TeaCache (vanilla)
    compiled: bool = False
    offload: str | None = None
    quantize: str | None = None
    seconds: float = 0.0
    computed: int = 0
    total: int = 0
    peak_memory_bytes: int | None = None
    change_vs_vanilla: float | None = None  # mean |latents - vanilla's| / mean |vanilla's|
    error: str | None = None
    extra: dict = field(default_factory=dict)


def build_transformer(shape: Shape, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Random weights made directly on the device in the target dtype (12B parameters: no 48 GB fp32 detour)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = FluxTransformer2DModel(**shape.config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device).eval().requires_grad_(False)  # already in dtype; to(dtype) would warn


def pipeline_inputs(shape: Shape, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """What FluxPipeline hands the transformer besides latents and timestep (packed ids, text, pooled, guidance)."""
    rows, cols = shape.grid
    generator = torch.Generator("cpu").manual_seed(1)
    img_ids = torch.zeros(rows, cols, 3)
    img_ids[..., 1] = torch.arange(rows)[:, None]
    img_ids[..., 2] = torch.arange(cols)[None, :]
    text = torch.randn(1, shape.text_tokens, shape.config["joint_attention_dim"], generator=generator)
    pooled = torch.randn(1, shape.config["pooled_projection_dim"], generator=generator)
    inputs = dict(
        encoder_hidden_states=text,
        pooled_projections=pooled,
        img_ids=img_ids.reshape(rows * cols, 3),
        txt_ids=torch.zeros(shape.text_tokens, 3),
        guidance=torch.full((1,), shape.guidance),
    )
    return {key: value.to(device=device, dtype=dtype) for key, value in inputs.items()}


def sigmas(shape: Shape) -> list[float]:
    """FluxPipeline's schedule: linspace(1, 1/steps), shifted by mu from the token count (base 0.5 at 256 tokens,
    max 1.15 at 4096), then the terminal 0."""
    tokens = shape.grid[0] * shape.grid[1]
    mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)
    plain = [1.0 - i * (1.0 - 1.0 / shape.steps) / max(shape.steps - 1, 1) for i in range(shape.steps)]
    return [math.exp(mu) / (math.exp(mu) + (1.0 / s - 1.0)) for s in plain] + [0.0]


@torch.no_grad()
def denoise(model, shape: Shape, inputs: dict, device: torch.device, dtype: torch.dtype, steps: int | None = None):
    """The Euler loop of FluxPipeline, with fixed starting noise; returns the final latents."""
    rows, cols = shape.grid
    generator = torch.Generator("cpu").manual_seed(2)
    latents = torch.randn(1, rows * cols, shape.config["in_channels"], generator=generator).to(device, dtype)
    schedule = sigmas(shape)[: (steps or shape.steps)] + [0.0]
    for sigma, following in zip(schedule[:-1], schedule[1:]):
        timestep = torch.full((1,), sigma, device=device, dtype=dtype)  # the pipeline passes t / 1000 = sigma
        noise = model(hidden_states=latents, timestep=timestep, return_dict=False, **inputs)[0]
        latents = (latents.float() + (following - sigma) * noise.float()).to(dtype)
    return latents


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_row(row: Row, model, shape: Shape, inputs: dict, device: torch.device, dtype: torch.dtype):
    """One timed generation for the row; returns its final latents (None when it failed)."""
    handle = None
    if row.thresh is not None:
        config = TeaCacheConfig(thresh=row.thresh, coefficients=FLUX_COEFFICIENTS, num_inference_steps=shape.steps)
        handle = apply_teacache(model, config)
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _synchronize(device)
        started = time.perf_counter()
        latents = denoise(model, shape, inputs, device, dtype)
        _synchronize(device)
        row.seconds = time.perf_counter() - started
        if not bool(torch.isfinite(latents).all()):  # random weights can overflow; decisions on NaN mean nothing
            row.error = "the latents are not finite (NaN or inf)"
        if device.type == "cuda":
            row.peak_memory_bytes = torch.cuda.max_memory_allocated(device)
        totals = handle.stats.totals if handle else None
        row.total = totals.calls if totals else shape.steps
        row.computed = row.total - totals.cached if totals else shape.steps
        return latents
    except Exception as error:  # one broken row must not hide the others: it is reported
        row.error = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        return None
    finally:
        if handle is not None:
            handle.remove()


def run_rows(rows: list[Row], model, shape: Shape, inputs: dict, device, dtype, warmup_steps: int) -> None:
    """Warm up (kernels, compilation, the hook) with a short hooked and unhooked run, then time every row."""
    for warm in (Row("warm-up", None), Row("warm-up", 0.0)):
        shorter = Shape(shape.config, shape.height, shape.width, shape.text_tokens, warmup_steps, shape.guidance)
        run_row(warm, model, shorter, inputs, device, dtype)
        if warm.error:
            for row in rows:
                row.error = f"warm-up failed: {warm.error}"
            return
    vanilla = None
    for row in rows:
        latents = run_row(row, model, shape, inputs, device, dtype)
        if latents is None:
            continue
        if row.thresh is None:
            vanilla = latents.float()
        elif vanilla is not None:
            row.change_vs_vanilla = float((latents.float() - vanilla).abs().mean() / vanilla.abs().mean())


def offload_blocks(model, device: torch.device) -> str:
    """diffusers' group offloading, one block per group: the weights live on the CPU and each block is brought
    in before it runs (on a side stream on CUDA, so the copy of the next block overlaps the current one)."""
    from diffusers.hooks import apply_group_offloading

    model.to("cpu")
    on_cuda = device.type == "cuda"
    apply_group_offloading(
        model,
        onload_device=device,
        offload_device=torch.device("cpu"),
        offload_type="block_level",
        num_blocks_per_group=1,
        use_stream=on_cuda,
    )
    return "group offloading, block level" + (", CUDA stream" if on_cuda else "")


def flux_check(shape: Shape, device: torch.device, dtype: torch.dtype, options: Any) -> dict[str, Any]:
    """Every row of part 2 and what it ran on."""
    threshs = [None, 0.0, *options.threshs]
    built = time.perf_counter()
    model = build_transformer(shape, device, dtype)
    result: dict[str, Any] = {
        "config": {key: list(v) if isinstance(v, tuple) else v for key, v in shape.config.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "height": shape.height,
        "width": shape.width,
        "steps": shape.steps,
        "dtype": str(dtype).removeprefix("torch."),
        "build_seconds": round(time.perf_counter() - built, 1),
    }
    inputs = pipeline_inputs(shape, device, dtype)
    rows: list[Row] = []
    for compiled in (False, True) if options.compile != "off" else (False,):
        group = [Row(_name(t, compiled), t, compiled=compiled) for t in threshs]
        if compiled:
            try:
                backend = dict(backend=options.compile) if options.compile != "inductor" else {}
                result["compiled_blocks"] = compile_transformer_blocks(model, **backend)
                result["compile_backend"] = options.compile
            except Exception as error:
                for row in group:
                    row.error = f"compile failed: {type(error).__name__}: {error}"[:300]
        if not any(row.error for row in group):
            run_rows(group, model, shape, inputs, device, dtype, options.warmup_steps)
        if compiled:
            uncompile_transformer_blocks(model)
        rows += group
    if options.offload_threshs is not None:
        group = [Row(_name(t, False) + " +offload", t) for t in [None, *options.offload_threshs]]
        try:
            label = offload_blocks(model, device)
            for row in group:
                row.offload = label
            run_rows(group, model, shape, inputs, device, dtype, options.warmup_steps)
        except Exception as error:
            for row in group:
                row.error = f"offload failed: {type(error).__name__}: {error}"[:300]
        rows += group
    if options.int8_threshs is not None:
        rows += int8_rows(shape, device, dtype, inputs, options)
    result["rows"] = [_row_record(row, rows) for row in rows]
    return result


def int8_rows(shape: Shape, device: torch.device, dtype: torch.dtype, inputs: dict, options: Any) -> list[Row]:
    """Vanilla and TeaCache on a fresh copy whose Linear weights torchao made int8 (Int8WeightOnlyConfig, as
    teacli's torchao-int8 gives diffusers). The first copy stays (on the CPU when its rows were offloaded)."""
    group = [Row(_name(t, False) + " +int8", t, quantize="torchao-int8") for t in [None, *options.int8_threshs]]
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        model = build_transformer(shape, device, dtype)
        quantize_(model, Int8WeightOnlyConfig())
        run_rows(group, model, shape, inputs, device, dtype, options.warmup_steps)
    except Exception as error:  # torchao missing or its kernels refusing this GPU: said in the rows
        for row in group:
            row.error = f"int8 failed: {type(error).__name__}: {error}"[:300]
    return group


def _name(thresh: float | None, compiled: bool) -> str:
    base = "vanilla" if thresh is None else f"teacache@{thresh:g}"
    return base + (" +compile" if compiled else "")


def _row_record(row: Row, rows: list[Row]) -> dict[str, Any]:
    """The row with speedup against the vanilla row of its own group (same compile and offload setting)."""
    vanilla = next(
        (
            r
            for r in rows
            if r.thresh is None and (r.compiled, r.offload, r.quantize) == (row.compiled, row.offload, row.quantize)
        ),
        None,
    )
    record = {key: value for key, value in vars(row).items() if key != "extra"}
    ok = row.error is None and vanilla is not None and vanilla.error is None and row.seconds > 0
    speedup = vanilla.seconds / row.seconds if ok else None
    ideal = row.total / row.computed if ok and row.computed else None
    record.update(
        seconds=round(row.seconds, 3),
        speedup=round(speedup, 3) if speedup else None,
        ideal_speedup=round(ideal, 3) if ideal else None,
        efficiency=round(speedup / ideal, 3) if speedup and ideal else None,
    )
    return record
