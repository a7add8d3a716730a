"""TeaCache under diffusers' context parallelism: one decision for all ranks, residuals on each rank's shard.

Each rank of a context-parallel run holds a shard of the sequence. TeaCache decides on the whole tensor (the
ranks sum rel_l1's terms, so they all decide alike and the attention collectives pair up), caches its own shard's
residual, and runs inside diffusers' input split, never above it (engine/layering.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from diffusers.utils.torch_utils import unwrap_module

from .config import TeaCacheError
from .context import CacheContext
from .decision import rel_l1_from_terms, rel_l1_terms
from .diffusers_internals import (
    context_parallel_config,
    shard_sequence,
    sharding_group,
)


def distributed() -> bool:
    """torch.distributed is initialized (a process group exists)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def context_parallel(module: torch.nn.Module) -> Any:
    """diffusers' ContextParallelConfig of a transformer with context parallelism enabled, else None."""
    sharding = context_parallel_config(unwrap_module(module))
    if sharding is None:
        return None
    return sharding if sharding.ring_degree * sharding.ulysses_degree > 1 else None


def sync_group(mode: bool | str, sharding: Any, module_name: str) -> Any:
    """The process group whose ranks must decide together, or None to decide alone.

    `mode` is TeaCacheConfig.sync_decisions; `sharding` the transformer's ContextParallelConfig (None without
    context parallelism)."""
    if mode is False:
        return None
    if not distributed():
        if mode is True:
            raise TeaCacheError(
                f"sync_decisions=True on {module_name} needs torch.distributed initialized (launch with "
                "torchrun or call init_process_group first); 'auto' syncs only under context parallelism"
            )
        return None
    if sharding is not None:
        return sharding_group(sharding)
    return torch.distributed.group.WORLD if mode is True else None


def synced_distance(
    modulated: torch.Tensor, previous: torch.Tensor | None, forced: bool, group: Any
) -> tuple[float | None, bool]:
    """rel_l1 of the whole tensor the group's ranks hold shards of, and whether any rank must compute.

    Every rank calls this exactly once per transformer call whatever its own state, so the collectives
    always pair up; the result is the same on every rank, and so is the decision taken from it.
    """
    if previous is not None:
        terms = rel_l1_terms(modulated, previous)
    else:
        terms = torch.zeros(3, dtype=torch.float64, device=modulated.device)
    flags = torch.tensor([previous is None, forced], dtype=torch.float64, device=modulated.device)
    summed = torch.cat((terms, flags))
    torch.distributed.all_reduce(summed, op=torch.distributed.ReduceOp.SUM, group=group)
    numerator, denominator, count, missing, forcing = summed.tolist()
    distance = rel_l1_from_terms(numerator, denominator, count) if missing == 0 else None
    return distance, forcing > 0


def shard_streams(context: CacheContext, shapes: Sequence[Any], sharding: Any) -> CacheContext:
    """The context with its streams cut to the rank's sequence shard where the blocks work on one.

    Some context-parallel plans (Wan, Qwen-Image) split the sequence at the first block, not at the
    transformer's input: the blocks then return this rank's shard of a full-length stream, and the
    residual (and a cached call's sum) must use the same shard, cut as diffusers cuts it.
    """
    streams = list(context.streams)
    for index, (stream, shape) in enumerate(zip(streams, shapes)):
        if shape is None or stream.shape == shape or stream.ndim != len(shape):
            continue
        differing = [dim for dim in range(stream.ndim) if stream.shape[dim] != shape[dim]]
        if len(differing) != 1:
            continue
        shard = shard_sequence(stream, differing[0], sharding)
        if shard is not None and shard.shape == shape:
            streams[index] = shard
    if all(new is old for new, old in zip(streams, context.streams)):
        return context
    if len(streams) == 1:
        return replace(context, hidden_states=streams[0])
    return replace(context, hidden_states=streams[0], encoder_hidden_states=streams[1])
