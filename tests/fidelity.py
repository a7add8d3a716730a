"""The two proofs every extractor owes, written once for every family's test module.

1. Caching off: with thresh 0 the hooked transformer returns what the unhooked forward returns,
   for every tensor in its output, call after call and branch after branch.
2. Caching on: a cached call returns exactly postprocess(input + cached residual) for every stream
   the extractor caches, and the residual is what the blocks added on the last computed call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers.utils import BaseOutput

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache

# Any polynomial works for these proofs: thresh 0 computes every call, thresh 1e9 caches every one.
COEFFICIENTS = (1.0, 0.0)
TOLERANCE = dict(rtol=1e-6, atol=1e-6)

Call = tuple[str | None, dict[str, Any]]  # (cache_context branch or None, forward kwargs)


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
