"""Counting a pipeline's transformer calls, and how many of them computed the blocks, whatever cache runs.

`count_transformer_calls` watches every denoiser and the last block of its last block list: the same count for
TeaCache, diffusers' caches and cache-dit, so `--compare-baseline` and `teacli bench` compare like with like.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils.torch_utils import unwrap_module

from ..engine.apply import denoisers
from ..engine.devices import synchronize
from ..engine.diffusers_internals import transformer_block_identifiers


def block_lists(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList]]:
    """The transformer's lists of blocks, in registration order: the direct-child ModuleLists diffusers'
    caches hook (their names are diffusers' block identifiers), else every direct-child ModuleList holding
    a Linear."""
    module = unwrap_module(transformer)
    children = [(n, c) for n, c in module.named_children() if isinstance(c, torch.nn.ModuleList) and len(c)]
    names = transformer_block_identifiers()  # () where diffusers moved them: the generic rule then
    known = [(n, c) for n, c in children if n in names]
    if known:
        return known
    return [(n, c) for n, c in children if any(isinstance(m, torch.nn.Linear) for m in c.modules())]


@dataclass(frozen=True)
class TransformerCall:
    module: str  # which denoiser: "transformer", "transformer_2"
    ran: frozenset[str]  # the probe modules that ran during the call
    seconds: float


@dataclass
class CallCounter:
    """Transformer calls seen inside count_transformer_calls; see there for what "computed" means."""

    calls: list[TransformerCall] = field(default_factory=list)
    probes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # denoiser -> probe module names

    @property
    def total(self) -> int:
        return len(self.calls)

    @property
    def computed(self) -> int:
        full: dict[str, frozenset[str]] = {}
        for call in self.calls:
            full[call.module] = full.get(call.module, frozenset()) | call.ran
        unwatched = {name for name, probes in self.probes.items() if not probes}
        return sum(1 for call in self.calls if call.module in unwatched or (call.ran and call.ran == full[call.module]))

    @property
    def cached(self) -> int:
        return self.total - self.computed

    @property
    def seconds(self) -> float:
        return sum(call.seconds for call in self.calls)

    @property
    def per_call_seconds(self) -> float:
        return self.seconds / self.total if self.total else 0.0


def _probe_modules(transformer: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The leaf nn.Linear modules of the transformer's last block (any parameterised leaf when it has no Linear);
    {} when it has no block list or its last block no parameters: nothing to watch."""
    lists = block_lists(transformer)
    if not lists:
        return {}
    list_name, blocks = lists[-1]
    block = blocks[len(blocks) - 1]
    prefix = f"{list_name}.{len(blocks) - 1}"
    leaves = [(n, m) for n, m in block.named_modules() if not any(True for _ in m.children())]
    linears = {f"{prefix}.{n}": m for n, m in leaves if isinstance(m, torch.nn.Linear)}
    if linears:
        return linears
    weighted = {f"{prefix}.{n}" if n else prefix: m for n, m in leaves if any(True for _ in m.parameters(False))}
    return weighted


def _first_tensor_device(args: tuple, kwargs: dict, module: torch.nn.Module) -> torch.device:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@contextlib.contextmanager
def count_transformer_calls(pipe: Any) -> Iterator[CallCounter]:
    """Count the calls of every denoiser (transformer, transformer_2) while the block runs, however cached.

    total: forward calls of the denoisers (the outermost call, one per CFG branch run as its own call).
    computed: calls on which the transformer's block stack actually ran, measured the same way for every
        cache: the probes are the leaf nn.Linear modules of the LAST block of the transformer's last list
        of blocks (the direct-child ModuleLists diffusers' caches hook, in registration order, which is
        the order diffusers' own caches take as the execution order); a call is computed when every probe
        that runs at all in this counting window ran during it. Every cache skips or predicts the tail:
        TeaCache skips all blocks; FirstBlockCache and DBCache (with Bn_compute_blocks=0) run the first
        block(s) and skip the rest; MagCache skips all blocks; TaylorSeer predicts the attention modules
        (so the attention's projections do not run) or, in lite mode, whole blocks. Comparing with the
        union of probes seen, rather than every Linear the block owns, ignores a Linear the block never
        calls.
    seconds: wall time summed inside the denoiser calls, the device synchronised before and after each
        call on CUDA/MPS (two syncs per call: count in the measured runs only if that cost is acceptable).
    per_call_seconds: seconds / total.

    Caveats: a window needs one fully computed call per denoiser (every cache computes the first step);
    a "cached" FBCache/DBCache call still ran its first block(s), and a "cached" TaylorSeer call (default
    mode) still ran the feed-forward and norms, so those calls are not free; DBCache with
    Bn_compute_blocks > 0 runs the last block on every call and would count every call computed; the probe
    hooks are Python callbacks inside the blocks, so under torch.compile they break the graph.
    """
    counter = CallCounter()
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, module in denoisers(pipe).items():
            probes = _probe_modules(module)  # none to watch: every call counts as computed (timing still works)
            counter.probes[name] = tuple(probes)
            handles += _count(module, name, probes, counter)
        yield counter
    finally:
        for handle in handles:
            handle.remove()


def _count(
    module: torch.nn.Module, name: str, probes: dict[str, torch.nn.Module], counter: CallCounter
) -> list[torch.utils.hooks.RemovableHandle]:
    current: dict[str, Any] = {"depth": 0, "ran": set(), "started": 0.0, "device": None}

    def before(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        current["depth"] += 1
        if current["depth"] > 1:
            return
        device = _first_tensor_device(args, kwargs, module)
        synchronize(device)
        current.update(ran=set(), device=device, started=time.perf_counter())

    def after(_module: torch.nn.Module, _args: tuple, _output: Any) -> None:
        current["depth"] -= 1
        if current["depth"] > 0:
            return
        synchronize(current["device"])
        seconds = time.perf_counter() - current["started"]
        counter.calls.append(TransformerCall(name, frozenset(current["ran"]), seconds))

    def ran(probe: str) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _args: tuple, _output: Any) -> None:
            if current["depth"] > 0:
                current["ran"].add(probe)

        return hook

    handles = [
        module.register_forward_pre_hook(before, with_kwargs=True),
        module.register_forward_hook(after, always_call=True),
    ]
    handles += [probe.register_forward_hook(ran(probe_name)) for probe_name, probe in probes.items()]
    return handles
