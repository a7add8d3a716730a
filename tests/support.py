"""Helpers the test folders share; the fixtures live in conftest.py.

- Tiny FLUX transformers and their inputs, for the engine's tests.
- The two proofs every extractor owes, written once for every family's test module:
  1. Caching off: with thresh 0 the hooked transformer returns what the unhooked forward returns,
     for every tensor in its output, call after call and branch after branch.
  2. Caching on: a cached call returns exactly postprocess(input + cached residual) for every stream
     the extractor caches, and the residual is what the blocks added on the last computed call.
- End to end through the CLI on an embedded tiny pipeline, with the report's counts proven right:
  `generate_and_check` runs `teacli generate` in-process, captures the statistics the report was
  rendered from, and checks three things: the table shows exactly those per-branch counts; every
  branch made one call per step, with the first and last forced; and replaying the decision rule on
  the recorded distances with the preset's coefficients and threshold gives the recorded decisions.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.utils import BaseOutput
from typer.testing import CliRunner

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache
from teacli.cli import app
from teacli.engine.decision import Decision, decide
from teacli.engine.stats import TeaCacheStats
from teacli.generation.caching import teacache_configs
from teacli.models.loading import resolve_preset

# Any polynomial works for these proofs: thresh 0 computes every call, thresh 1e9 caches every one.
COEFFICIENTS = (1.0, 0.0)
TOLERANCE = dict(rtol=1e-6, atol=1e-6)
Call = tuple[str | None, dict[str, Any]]  # (cache_context branch or None, forward kwargs)
RANK = 4
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
ROW = re.compile(r"^\W*(?P<label>[\w/#.-]+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│", re.MULTILINE)


def make_flux_transformer(guidance_embeds: bool = True):
    """A tiny FluxTransformer2DModel (the real class), fp32, eval mode, fixed seed."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    )
    return model.eval()


def flux_inputs(seed: int, timestep: float = 0.7, batch: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, 16, 16, generator=generator),
        encoder_hidden_states=torch.randn(batch, 8, 32, generator=generator),
        pooled_projections=torch.randn(batch, 32, generator=generator),
        timestep=torch.full((batch,), timestep),
        img_ids=torch.randn(16, 3, generator=generator),
        txt_ids=torch.zeros(8, 3),
        guidance=torch.full((batch,), 3.5),
    )


def output_tensors(output: Any) -> tuple[torch.Tensor, ...]:
    """Every tensor a forward returned: a BaseOutput, a tuple, a bare tensor, or lists of per-image
    tensors inside them (Z-Image returns those)."""
    if isinstance(output, torch.Tensor):
        return (output,)
    values = output.values() if isinstance(output, BaseOutput) else output
    tensors: list[torch.Tensor] = []
    for value in values:
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif isinstance(value, (list, tuple)):
            tensors.extend(output_tensors(value))
    assert tensors, f"the forward returned no tensor: {type(output).__name__}"
    return tuple(tensors)


def _call(model: torch.nn.Module, branch: str | None, kwargs: dict[str, Any]) -> Any:
    if branch is None:
        return model(**kwargs)
    with model.cache_context(branch):
        return model(**kwargs)


@torch.no_grad()
def assert_caching_off_matches_unhooked(model: torch.nn.Module, calls: Sequence[Call], **tolerance: float) -> None:
    """thresh 0 == the unhooked forward for every returned tensor; the hook leaves cleanly."""
    model.eval()
    expected = [output_tensors(_call(model, branch, kwargs)) for branch, kwargs in calls]
    handle = apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=COEFFICIENTS))
    try:
        for index, ((branch, kwargs), reference) in enumerate(zip(calls, expected)):
            output = _call(model, branch, kwargs)
            if kwargs.get("return_dict", True) is False:
                assert isinstance(output, tuple), f"call {index}: return_dict=False must give a tuple"
            got = output_tensors(output)
            assert len(got) == len(reference), f"call {index}: {len(got)} outputs, unhooked gave {len(reference)}"
            for stream, (actual, wanted) in enumerate(zip(got, reference)):
                where = f"call {index} output {stream}"
                torch.testing.assert_close(
                    actual, wanted, **(tolerance or TOLERANCE), msg=lambda m, w=where: f"{w}: {m}"
                )
        assert handle.stats.totals.cached == 0
        assert handle.stats.totals.calls == len(calls)
        branches = {branch or "default" for branch, _ in calls}
        assert {record.branch for record in handle.stats.records} == branches
    finally:
        remove_teacache(model)


@torch.no_grad()
def assert_cached_call_is_input_plus_residual(
    model: torch.nn.Module, first: dict[str, Any], second: dict[str, Any], branch: str | None = None
) -> tuple[torch.Tensor, ...]:
    """Call once (computed), then again with caching forced on: the second output must be exactly
    postprocess(second's block inputs + the residual the first call's blocks added). Returns the
    cached residuals, one per stream, for family-specific checks."""
    model.eval()
    extractor = get_extractor(type(model).__name__)
    handle = apply_teacache(model, TeaCacheConfig(thresh=1e9, coefficients=COEFFICIENTS))
    try:
        _call(model, branch, first)
        state = handle.hooks[0].state_manager.get_state() if branch is None else None
        if state is None:
            with model.cache_context(branch):
                state = handle.hooks[0].state_manager.get_state()
        residuals = tuple(r.clone() for r in state.cached_residuals)
        cached = output_tensors(_call(model, branch, second))
        assert [str(r.decision) for r in handle.stats.records] == ["forced", "cached"]
    finally:
        remove_teacache(model)

    first_context = extractor(model, **first)
    blocks_out = first_context.run_transformer_blocks()
    assert len(residuals) == len(first_context.streams) == len(blocks_out)
    for residual, out, stream in zip(residuals, blocks_out, first_context.streams):
        assert torch.equal(residual, out - stream), "the cached residual is not what the blocks added"

    context = extractor(model, **second)
    expected = output_tensors(context.postprocess(*(s + r for s, r in zip(context.streams, residuals))))
    assert len(cached) == len(expected)
    for actual, wanted in zip(cached, expected):
        assert torch.equal(actual, wanted), "a cached call must return exactly postprocess(input + residual)"
    return residuals


def table_counts(output: str) -> dict[str, tuple[int, int, int, int]]:
    """The report table as {branch: (calls, computed, forced, cached)}, 'total' included."""
    return {m["label"]: tuple(int(m.group(i)) for i in range(2, 6)) for m in ROW.finditer(output)}


def replay(stats: TeaCacheStats, configs) -> None:
    """Recompute every non-forced decision from the recorded distance and the running accumulator,
    with each denoiser's own config (`configs`: a TeaCacheConfig or one per denoiser name)."""
    accumulated: dict[tuple, float] = defaultdict(float)
    for record in stats.records:
        key = (record.generation, record.module, record.branch)
        config = configs[record.module] if isinstance(configs, dict) else configs
        verdict = decide(
            distance=record.rel_l1,
            accumulated=accumulated[key],
            coefficients=config.coefficients,
            thresh=config.thresh,
            forced=record.decision is Decision.FORCED,
            x_range=config.rel_l1_range,
        )
        assert verdict.decision is record.decision, f"{key} step {record.step}: replay says {verdict.decision}"
        accumulated[key] = verdict.carried


def generate_and_check(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    preset_name: str,
    *args: str,
    steps: int,
    thresh: float,
    branches: set[str],
    suffix: str = ".png",
) -> tuple[TeaCacheStats, dict[str, tuple[int, int, int, int]]]:
    """Run `teacli generate --model preset_name`, check the report, return (stats, table counts).

    The output goes to tmp_path / (preset_name + suffix): .mp4 / .gif for video models, .wav for audio.
    Branch labels are "module/branch" when several denoisers ran (Wan 2.2's two experts)."""
    import teacli.generation.report

    captured = []
    render = teacli.generation.report.render_generation

    def capture(summary, console):
        captured.append(summary)
        render(summary, console)

    monkeypatch.setattr(teacli.generation.report, "render_generation", capture)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / f"{preset_name}{suffix}"
    result = CliRunner().invoke(
        app,
        ["generate", "an owl on a tree", "--model", preset_name, "--steps", str(steps), "--thresh", str(thresh)]
        + ["--device", "cpu", "--out", str(out), *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()
    (summary,) = captured
    stats = summary.stats
    counts = table_counts(result.output)

    several_modules = len({module for module, _ in stats.branches()}) > 1
    by_branch = {
        f"{module}/{branch}" if several_modules else branch: ((module, branch), totals)
        for (module, branch), totals in stats.by_branch().items()
    }
    assert set(by_branch) == branches
    for label, ((module, branch), totals) in by_branch.items():
        assert counts[label] == (totals.calls, totals.computed, totals.forced, totals.cached)
        decisions = [r.decision for r in stats.records if (r.module, r.branch) == (module, branch)]
        assert decisions[0] is Decision.FORCED, f"{label}: a state's first call is always computed"
        if not several_modules:
            assert totals.calls == steps, f"{label}: one transformer call per step"
            assert decisions[-1] is Decision.FORCED
    assert sum(t.calls for t in stats.by_branch().values()) == len(stats.records)
    total = stats.totals
    assert counts["total"] == (total.calls, total.computed, total.forced, total.cached)

    replay(stats, teacache_configs(resolve_preset(preset_name), thresh))
    return stats, counts


def read_video(path: Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (width, height)) of a written video, read back through imageio."""
    import imageio

    reader = imageio.get_reader(path)
    try:
        return reader.count_frames(), reader.get_meta_data()["size"]
    finally:
        reader.close()


def lora_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A LoRA for tiny-flux's transformer: peft layers with lora_B drawn non-zero, so it changes the output."""
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig, get_peft_model_state_dict

    from teacli.models.embedded import embedded_model_path

    transformer = FluxTransformer2DModel.from_pretrained(embedded_model_path("tiny-flux"), subfolder="transformer")
    transformer.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TARGETS))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: an identity LoRA would prove nothing
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return get_peft_model_state_dict(transformer)


def save_lora(directory, state_dict, safe: bool = True):
    from diffusers import FluxPipeline

    FluxPipeline.save_lora_weights(directory, transformer_lora_layers=state_dict, safe_serialization=safe)
    return directory / ("pytorch_lora_weights.safetensors" if safe else "pytorch_lora_weights.bin")
