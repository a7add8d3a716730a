"""Weights an extractor uses outside their block's forward, on the device the call computes on.

Extractors read some blocks' parameters without calling the block (the first block's scale_shift_table gives
PixArt's, Sana's and LTX's modulated input). Offloading moves a module's own tensors onto the device only in
that module's forward: under accelerate's sequential offload they sit on the meta device between calls, under
diffusers' group offloading on the CPU. `own_tensor` fetches the stored value and moves it; without offloading
it is the tensor itself (moving to its own device is free).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .diffusers_internals import (
    accelerate_offloaded_tensor,
    group_is_onloaded,
    offload_group,
    offload_group_now,
    onload_group,
    wait_for_group,
)


def own_tensor(module: torch.nn.Module, name: str, device: torch.device) -> torch.Tensor:
    """`module.<name>` (a parameter or buffer of the module itself) on `device`, wherever offloading keeps it."""
    tensor = getattr(module, name)
    if tensor.device.type == "meta":
        stored = accelerate_offloaded_tensor(module, name)
        if stored is not None:
            tensor = stored
    return tensor.to(device)


@contextmanager
def first_blocks_onloaded(module: torch.nn.Module) -> Iterator[None]:
    """Under block-level group offloading a block's weights come onto the device only in the block's own forward,
    but extractors run the first block's modulation (norm1, img_mod, adaLN_modulation) before it to find the
    modulated input. The first block of each block list is brought in for the call (its prefetch waited for), and
    sent back after it if no block ran (a cached call); a computed call's blocks offload it themselves."""
    groups = [group for block in first_blocks(module) if (group := offload_group(block)) is not None]
    brought = [group for group in groups if not group_is_onloaded(group)]
    for group in groups:
        if group in brought:
            onload_group(group)
        else:
            wait_for_group(group)  # prefetched on a side stream: the copy may still be running
    try:
        yield
    finally:
        for group in brought:
            if group_is_onloaded(group):
                offload_group_now(group)


def first_blocks(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The first block of each of the transformer's block lists (transformer_blocks, single_transformer_blocks...)."""
    return [
        child[0]
        for child in module.children()
        if isinstance(child, torch.nn.ModuleList | torch.nn.Sequential) and len(child)
    ]
