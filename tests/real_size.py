"""Real-size checks without weights: a transformer built from its published config on the meta device.

Meta tensors carry shapes and dtypes but no data, so a full-size model (FLUX.1-dev: 12B parameters) builds in
milliseconds and a forward at real input shapes runs in about a second on CPU. This catches the plumbing tiny
configs hide: guidance embeddings, rotary dimensions, patch sizes, text lengths, extra conditioning.

One thing a meta tensor cannot do is give a value: extractors read the timestep as a float for the record, and
`.item()` raises on meta. `MetaScalars` answers such reads with a fixed number so the rest of the call runs; the
values of the outputs mean nothing, their shapes do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from support import COEFFICIENTS, output_tensors
from torch.utils._python_dispatch import TorchDispatchMode

from teacli import TeaCacheConfig, apply_teacache, remove_teacache

META = torch.device("meta")


class MetaScalars(TorchDispatchMode):
    """Answers a scalar read of a meta tensor (`float(t)`, `t.item()`) with a fixed value instead of raising."""

    def __init__(self, value: float = 0.5) -> None:
        super().__init__()
        self.value = value

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args[0].is_meta:
            if args[0].dtype == torch.bool:
                return True
            return self.value if args[0].is_floating_point() else 1
        return func(*args, **(kwargs or {}))


def meta(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """An input of the given shape with no data."""
    return torch.empty(*shape, device=META, dtype=dtype)


def build_on_meta(model_class: type, config: Mapping[str, Any], dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """The transformer from a published config.json (its `_class_name` and `_diffusers_version` keys are ignored)."""
    with torch.device(META), MetaScalars():
        model = model_class.from_config(dict(config))
    return model.to(dtype).eval()


def shapes(output: Any) -> list[tuple[int, ...]]:
    return [tuple(tensor.shape) for tensor in output_tensors(output)]


@torch.no_grad()
def hooked_meta_call(
    model_class: type,
    config: Mapping[str, Any],
    inputs: Mapping[str, Any],
    dtype: torch.dtype = torch.bfloat16,
) -> list[tuple[int, ...]]:
    """Builds the model on meta, runs one unhooked and one hooked call (thresh 0: computed) on the same inputs,
    checks the hook computed it and changed no shape, and returns the hooked output's shapes."""
    model = build_on_meta(model_class, config, dtype)
    with MetaScalars():
        unhooked = shapes(model(**inputs))
    handle = apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=COEFFICIENTS))
    try:
        with MetaScalars():
            hooked = shapes(model(**inputs))
        assert handle.stats.totals.calls == 1 and handle.stats.totals.cached == 0
    finally:
        remove_teacache(model)
    assert hooked == unhooked, f"the hook changed the output shapes: {hooked} != {unhooked}"
    return hooked


@torch.no_grad()
def meta_context_shapes(
    model_class: type,
    config: Mapping[str, Any],
    inputs: Mapping[str, Any],
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, tuple[int, ...] | None]:
    """The narrower check for a model whose blocks cannot run on meta: the extractor alone (embedding, the
    modulated input) at real size, without running the blocks. Returns the shapes of the context's tensors."""
    from teacli import get_extractor

    model = build_on_meta(model_class, config, dtype)
    with MetaScalars():
        context = get_extractor(model_class.__name__)(model, **inputs)
    streams = ("modulated_input", "hidden_states", "encoder_hidden_states", "temb")
    return {name: None if getattr(context, name) is None else tuple(getattr(context, name).shape) for name in streams}
