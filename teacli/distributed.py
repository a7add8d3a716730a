"""Which process this is when torchrun or accelerate launch started several, its device, and the few collectives
splitting prompts between them needs. Both launchers set RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR and
MASTER_PORT, which init_process_group reads)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

TIMEOUT_ENV = "TEACLI_DIST_TIMEOUT"  # seconds a rank waits for the others before giving up
BACKEND_ENV = "TEACLI_DIST_BACKEND"  # nccl or gloo, instead of teacli's choice
DEFAULT_TIMEOUT_SECONDS = 30 * 60


class DistributedError(RuntimeError):
    """The launch environment cannot work; the message says what was wrong and what to do."""


@dataclass(frozen=True)
class Launch:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch:
    """The launch torchrun or accelerate launch described in the environment; one process when none did."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return Launch()

    def number(name: str, default: int | None = None) -> int:
        text = env.get(name)
        if text is None and default is not None:
            return default
        try:
            return int(text)
        except (TypeError, ValueError):
            raise DistributedError(
                f"{name}={text!r} is not a number; launch with torchrun or accelerate launch, which set it"
            ) from None

    world_size = number("WORLD_SIZE")
    rank = number("RANK", 0 if world_size == 1 else None)
    local_rank = number("LOCAL_RANK", 0 if world_size == 1 else None)
    local_world_size = number("LOCAL_WORLD_SIZE", world_size)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise DistributedError(f"RANK={rank} WORLD_SIZE={world_size} is not a valid launch; check the launcher")
    return Launch(rank, world_size, local_rank, local_world_size)


def rank_device(launch: Launch, requested: str = "auto") -> torch.device:
    """This process's device: cuda:LOCAL_RANK where CUDA is asked for or available (processes beyond the GPU
    count share them round-robin), else what pick_device chooses (the CPU, or MPS)."""
    from .loading import pick_device

    device = pick_device(requested)
    if device.type == "cuda":
        return torch.device("cuda", launch.local_rank % torch.cuda.device_count())
    return device


def pick_backend(launch: Launch, device: torch.device, environ: Mapping[str, str] | None = None) -> str:
    """nccl when every process on this machine has a GPU of its own (NCCL refuses two ranks on one GPU), else gloo."""
    env = os.environ if environ is None else environ
    chosen = env.get(BACKEND_ENV)
    if chosen:
        if chosen not in ("nccl", "gloo"):
            raise DistributedError(f"{BACKEND_ENV}={chosen!r}: give nccl or gloo")
        return chosen
    if device.type == "cuda" and launch.local_world_size <= torch.cuda.device_count():
        return "nccl"
    return "gloo"


def timeout_from_env(environ: Mapping[str, str] | None = None) -> timedelta:
    env = os.environ if environ is None else environ
    text = env.get(TIMEOUT_ENV)
    if text is None:
        return timedelta(seconds=DEFAULT_TIMEOUT_SECONDS)
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise DistributedError(f"{TIMEOUT_ENV}={text!r}: give the seconds a process waits for the others, e.g. 1800")
    return timedelta(seconds=seconds)


@contextmanager
def process_group(launch: Launch, device: torch.device) -> Iterator[str | None]:
    """torch.distributed set up for this launch (nothing for one process), torn down on the way out. Every wait
    on the other processes gives up after TEACLI_DIST_TIMEOUT seconds, so one failed rank cannot hang the rest."""
    if not launch.distributed:
        yield None
        return
    import torch.distributed as dist

    backend = pick_backend(launch, device)
    if backend == "nccl":
        torch.cuda.set_device(device)  # NCCL's collectives run on the current device
    dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size, timeout=timeout_from_env())
    try:
        yield backend
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - tearing down after another rank died must not hide the real error
            pass


def all_gather(value: Any, launch: Launch) -> list[Any]:
    """Every rank's `value`, in rank order (picklable objects); [value] for one process. Also a barrier."""
    if not launch.distributed:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * launch.world_size
    dist.all_gather_object(gathered, value)
    return gathered
