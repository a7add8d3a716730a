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

from ..errors import TeacliError

TIMEOUT_ENV = "TEACLI_DIST_TIMEOUT"  # seconds a rank waits for the others before giving up
BACKEND_ENV = "TEACLI_DIST_BACKEND"  # nccl or gloo, instead of teacli's choice
DEFAULT_TIMEOUT_SECONDS = 30 * 60


class DistributedError(TeacliError, RuntimeError):
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
    from ..models.loading import pick_device

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
    """TEACLI_DIST_TIMEOUT: how long a process that has finished waits without any progress from the others."""
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


class ProcessGroup:
    """The processes of one launch: a collective to exchange small objects, and a wait for the others that gives
    up only after `timeout` without any progress from them, so an uneven split (a resumed run where one rank has
    everything left) waits as long as the work takes, while a rank that hangs cannot hold the rest forever.
    For one process every call is immediate."""

    def __init__(self, launch: Launch, backend: str | None = None, store: Any = None, timeout: timedelta | None = None):
        self.launch = launch
        self.backend = backend
        self.store = store  # this launch's keys in the rendezvous store (progress, finished ranks)
        self.timeout = timeout or timedelta(seconds=DEFAULT_TIMEOUT_SECONDS)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order (picklable objects); [value] for one process. Also a barrier, meant
        for moments every rank reaches together (after reading the files, after wait_for_others)."""
        if not self.launch.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.launch.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def heartbeat(self) -> None:
        """Tell the others this rank is making progress (a denoising step, an output)."""
        if self.store is not None:
            self.store.add("progress", 1)

    def wait_for_others(self, poll_seconds: float = 0.5) -> None:
        """Say this rank is done, then wait until every rank is. DistributedError after `timeout` seconds in which
        no rank made progress."""
        if self.store is None:
            return
        import time

        self.store.add("finished", 1)
        last, idle_since = None, time.monotonic()
        while self.store.add("finished", 0) < self.launch.world_size:
            progress = self.store.add("progress", 0)
            if progress != last:
                last, idle_since = progress, time.monotonic()
            elif time.monotonic() - idle_since > self.timeout.total_seconds():
                raise DistributedError(
                    f"no other process made progress for {self.timeout.total_seconds():g} s; gave up waiting for "
                    f"them ({TIMEOUT_ENV} sets how long)"
                )
            time.sleep(poll_seconds)


# Start-up (imports, reading the prompts) differs between processes without anything being wrong.
START_TIMEOUT = timedelta(minutes=5)


@contextmanager
def process_group(launch: Launch, device: torch.device) -> Iterator[ProcessGroup]:
    """torch.distributed set up for this launch (nothing for one process), torn down on the way out."""
    if not launch.distributed:
        yield ProcessGroup(launch)
        return
    import torch.distributed as dist

    backend = pick_backend(launch, device)
    timeout = timeout_from_env()
    collective_timeout = max(timeout, START_TIMEOUT)
    if backend == "nccl":
        torch.cuda.set_device(device)  # NCCL's collectives run on the current device
    # The rendezvous store is made here (as init_process_group would) to keep a handle on it for the progress keys.
    store, _, _ = next(dist.rendezvous("env://", launch.rank, launch.world_size, timeout=collective_timeout))
    store.set_timeout(collective_timeout)
    dist.init_process_group(
        backend,
        store=dist.PrefixStore("default_pg", store),
        rank=launch.rank,
        world_size=launch.world_size,
        timeout=collective_timeout,
    )
    # torchrun keeps its store across restarts of the workers: one set of keys per attempt.
    keys = dist.PrefixStore(f"teacli/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    try:
        yield ProcessGroup(launch, backend, keys, timeout)
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - tearing down after another rank died must not hide the real error
            pass
