"""A pytest plugin: every extractor test's caching-off proof, rerun on the model under offloading or quantization.

Users run TeaCache on transformers that accelerate or diffusers offload, or that quanto or torchao quantized; the
extractors then read weights that may sit on the meta device between calls, or that are quantized tensor subclasses.
This plugin wraps `support.assert_caching_off_matches_unhooked` so that each call runs the unchanged proof on a deep
copy of the model put under each variant named in TEACLI_MEMORY_VARIANT (comma-separated, see VARIANTS). The proof
computes its unhooked reference on that same copy, so the rule checked is: with caching off, the hooked forward of
the transformed model equals its unhooked forward. TeaCache goes on after the variant, as teacli applies it.

On CPU, sequential offload is strict by itself: a tensor read outside its module's forward is on the meta device
and fails loudly. Group offloading here onloads to the device it offloads to, so it moves nothing; the block-level
variant tracks each group's residency instead and fails a module that runs while its group is offloaded (see
`resident_block_offload`). The leaf-level variant checks the hooks' layering and calls only.

Only the tests that call the proof are kept. A failing variant does not stop the others: each call runs under every
variant, the outcomes are collected per test and variant, written as JSON to TEACLI_MEMORY_REPORT, and a test with
any failing variant fails at the end of its call.

    PYTHONPATH=tests TEACLI_MEMORY_VARIANT=sequential-offload python -m pytest -p memory_variants tests/extractors
"""

from __future__ import annotations

import copy
import json
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PROOF = "assert_caching_off_matches_unhooked"
VARIANT_ENV, REPORT_ENV = "TEACLI_MEMORY_VARIANT", "TEACLI_MEMORY_REPORT"
# accelerate 1.16 mishandles "cpu:0" as an execution device; the bare device is what its hooks compare against.
CPU = torch.device("cpu")


class Variant(NamedTuple):
    apply: Callable[[torch.nn.Module], None]
    took_hold: Callable[[torch.nn.Module], bool]  # evidence the variant changed the copy: never a silent no-op


def sequential_offload(model: torch.nn.Module) -> None:
    """Every weight on the meta device between calls, brought in by its own module's hook only."""
    from accelerate import cpu_offload

    cpu_offload(model, execution_device=CPU)


def weights_on_meta(model: torch.nn.Module) -> bool:
    return any(parameter.device.type == "meta" for parameter in model.parameters())


def group_offload(offload_type: str) -> Callable[[torch.nn.Module], None]:
    def apply(model: torch.nn.Module) -> None:
        from diffusers.hooks import apply_group_offloading

        blocks = dict(num_blocks_per_group=1) if offload_type == "block_level" else {}
        apply_group_offloading(model, onload_device=CPU, offload_device=CPU, offload_type=offload_type, **blocks)

    return apply


def resident_block_offload(model: torch.nn.Module) -> None:
    """Block-level group offloading, failing any module that runs while its group is offloaded.

    Onloading CPU to CPU moves nothing, so a module called outside its group's window still computes here; on a GPU
    its weights would be on the CPU and its inputs on the device. So residency is tracked instead: a group is resident
    from its onload_ to its offload_ (the hooks' calls and teacli's), and a module with weights of its own that runs
    while its group is not resident raises, naming it. The copy's unhooked reference runs under the same check, which
    guards the simulation: the plain forward must pass it.
    """
    from teacli.engine.diffusers_internals import offload_group

    group_offload("block_level")(model)
    residency = {}  # module -> whether its group is onloaded now
    for leader in model.modules():  # pre-order: a nested group's members are reassigned after its parent's
        group = offload_group(leader)
        if group is not None and leader is group.onload_leader:
            resident = track_residency(group)
            residency.update((sub, resident) for member in group.modules for sub in member.modules())
            residency.pop(leader, None)  # it onloads its group in its own forward, after any pre-hook would run
    for name, sub in model.named_modules():
        if sub in residency and next(sub.parameters(recurse=False), None) is not None:
            sub.register_forward_pre_hook(fail_unless_resident(name, residency[sub]))


def track_residency(group: Any) -> Callable[[], bool]:
    """Wrap a ModuleGroup's onload_ and offload_; return whether it is onloaded now (apply offloaded it)."""
    onload, offload = group.onload_, group.offload_
    resident = False

    def onload_() -> None:
        nonlocal resident
        onload()
        resident = True

    def offload_() -> None:
        nonlocal resident
        offload()
        resident = False

    group.onload_, group.offload_ = onload_, offload_
    return lambda: resident


def fail_unless_resident(name: str, resident: Callable[[], bool]) -> Callable[..., None]:
    def pre_hook(module: torch.nn.Module, args: Any) -> None:
        if not resident():
            raise RuntimeError(f"{name} ran while its offloaded group was not onloaded (its weights off the device)")

    return pre_hook


def group_offloading_hooked(model: torch.nn.Module) -> bool:
    from teacli.engine.diffusers_internals import GROUP_OFFLOADING_HOOKS, own_hook_registry

    registries = [own_hook_registry(sub) for sub in model.modules()]
    return any(registry and set(GROUP_OFFLOADING_HOOKS) & set(registry.hooks) for registry in registries)


def quanto_int8(model: torch.nn.Module) -> None:
    from optimum.quanto import freeze, qint8, quantize

    quantize(model, weights=qint8)
    freeze(model)


def torchao_int8(model: torch.nn.Module) -> None:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(model, Int8WeightOnlyConfig())


def weights_from(package: str) -> Callable[[torch.nn.Module], bool]:
    """Whether some weight is a tensor subclass of `package` (quanto's and torchao's quantized tensors)."""

    def took_hold(model: torch.nn.Module) -> bool:
        return any(type(parameter).__module__.startswith(package) for parameter in model.parameters())

    return took_hold


VARIANTS: dict[str, Variant] = {
    "sequential-offload": Variant(sequential_offload, weights_on_meta),
    "group-offload-leaf": Variant(group_offload("leaf_level"), group_offloading_hooked),
    "group-offload-block": Variant(resident_block_offload, group_offloading_hooked),
    "quanto-int8": Variant(quanto_int8, weights_from("optimum.quanto")),
    "torchao-int8": Variant(torchao_int8, weights_from("torchao")),
}


def chosen_variants() -> list[str]:
    names = [name.strip() for name in os.environ.get(VARIANT_ENV, "").split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if not names or unknown:
        raise pytest.UsageError(f"{VARIANT_ENV} must name variants among {sorted(VARIANTS)}, got {names}")
    return names


def transformed(model: torch.nn.Module, variant: str) -> torch.nn.Module:
    """A deep copy under `variant`; the test's own (often module-scoped) model stays untouched."""
    variant_copy = copy.deepcopy(model)
    VARIANTS[variant].apply(variant_copy)
    if not VARIANTS[variant].took_hold(variant_copy):
        raise AssertionError(f"{variant} left {type(model).__name__} unchanged: the proof would check nothing")
    return variant_copy


def first_line(error: BaseException) -> str:
    """The error's first line, and the innermost frame of teacli's own code it came through (where to look)."""
    text = f"{type(error).__name__}: {error}".strip().splitlines()[0][:300]
    ours = [frame for frame in traceback.extract_tb(error.__traceback__) if is_ours(frame.filename)]
    return f"{text} (at {where(ours[-1])})" if ours else text


def is_ours(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.is_relative_to(ROOT) and not path.is_relative_to(ROOT / "tests")


def where(frame: traceback.FrameSummary) -> str:
    return f"{Path(frame.filename).resolve().relative_to(ROOT).as_posix()}:{frame.lineno}"


def report_line(report: pytest.TestReport) -> str:
    text = str(report.longrepr or "")
    errors = [line for line in text.splitlines() if line.startswith("E ")]
    return (errors[0] if errors else text.splitlines()[-1] if text else "")[:300]


class MemoryVariantsPlugin:
    """Wraps the proof before the test modules import it, keeps the tests that call it, records the outcomes."""

    def __init__(self) -> None:
        self.variants: list[str] = []
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.current: str | None = None

    def pytest_configure(self, config: pytest.Config) -> None:
        import support  # tests/ is on sys.path (PYTHONPATH, and the root conftest imports it too)

        self.variants = chosen_variants()
        support.assert_caching_off_matches_unhooked = self.wrap(support.assert_caching_off_matches_unhooked)

    def wrap(self, proof: Callable[..., None]) -> Callable[..., None]:
        def caching_off_under_variants(model, calls, **tolerance):
            # The test's own tolerance (fp32, 1e-6 by default) holds as is: the reference and the hooked call run
            # the same quantized kernels, or the same offloaded weights, so no variant needs a looser one.
            for variant in self.variants:
                self.run_one(proof, variant, model, calls, tolerance)

        return caching_off_under_variants

    def run_one(self, proof: Callable[..., None], variant: str, model, calls, tolerance) -> None:
        entry = self.outcomes[self.current]["variants"].setdefault(variant, {"outcome": "passed", "proofs": 0})
        entry["proofs"] += 1
        try:
            proof(transformed(model, variant), calls, **tolerance)
        except Exception as error:  # recorded, so every variant and every later proof call still runs
            if entry["outcome"] == "passed":
                entry.update(outcome="failed", message=first_line(error))

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        kept, dropped = [], []
        for item in items:
            code = getattr(getattr(item, "function", None), "__code__", None)
            (kept if code is not None and PROOF in code.co_names else dropped).append(item)
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        self.current = item.nodeid
        variants = self.outcomes.setdefault(item.nodeid, {"variants": {}})["variants"]
        result = yield
        failed = [f"{name}: {entry['message']}" for name, entry in variants.items() if entry["outcome"] == "failed"]
        if failed:
            raise AssertionError("the caching-off proof failed under " + "; ".join(failed))
        return result

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The test's own outcome over its phases: the first failure or skip wins, with its message."""
        entry = self.outcomes.setdefault(report.nodeid, {"variants": {}})
        if entry.setdefault("outcome", "passed") == "passed" and (report.failed or report.skipped):
            entry.update(outcome=report.outcome, message=report_line(report))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = os.environ.get(REPORT_ENV)
        if path:
            Path(path).write_text(json.dumps({"variants": self.variants, "tests": self.outcomes}, indent=1))


_plugin = MemoryVariantsPlugin()
pytest_configure = _plugin.pytest_configure
pytest_collection_modifyitems = _plugin.pytest_collection_modifyitems
pytest_runtest_call = _plugin.pytest_runtest_call
pytest_runtest_logreport = _plugin.pytest_runtest_logreport
pytest_sessionfinish = _plugin.pytest_sessionfinish
