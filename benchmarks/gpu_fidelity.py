"""Part 1 of the device check: every extractor's fidelity proofs on a device and dtype (CUDA bf16 and fp16).

The proofs are the tests' own (tests/support.py): this module is a pytest plugin that keeps only the tests that
call a proof and wraps both proofs so they run on a copy of the tiny model moved to the device and dtype, with the
inputs moved alongside (floating tensors cast, others only moved). Caching off must equal the unhooked forward
within a bf16 tolerance; a cached call must still be exactly input + residual. `run_fidelity` runs it in a
subprocess per dtype (a fresh CUDA context, and the tests' module-scoped models stay untouched) and reads back
one outcome per test.

    python -m pytest -p gpu_fidelity tests/extractors   # with PYTHONPATH=benchmarks and the TEACLI_CHECK_* below
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROOFS = ("assert_caching_off_matches_unhooked", "assert_cached_call_is_input_plus_residual")
# bf16 carries 8 bits of mantissa; caching off runs the same ops as the unhooked forward, so this is generous.
TOLERANCE = dict(rtol=2e-2, atol=2e-2)
DEVICE_ENV, DTYPE_ENV, REPORT_ENV = "TEACLI_CHECK_DEVICE", "TEACLI_CHECK_DTYPE", "TEACLI_CHECK_REPORT"


def _target() -> tuple[Any, Any]:
    import torch

    return torch.device(os.environ.get(DEVICE_ENV, "cpu")), getattr(torch, os.environ.get(DTYPE_ENV, "float32"))


def moved(value: Any) -> Any:
    """A forward's argument on the target device: floating tensors in the target dtype, complex and integer
    tensors (rotary tables, ids, masks) only moved; containers and plain state objects rebuilt; the rest as is."""
    import torch

    device, dtype = _target()
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
    if isinstance(value, dict):
        return {key: moved(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(moved(item) for item in value)
    if hasattr(value, "__dict__") and not isinstance(value, (torch.nn.Module, type)) and not callable(value):
        # A state object a test made with the CPU model (FLUX.2 Klein's reference K/V cache): a copy, moved.
        copied = copy.copy(value)
        for name, item in vars(value).items():
            setattr(copied, name, moved(item))
        return copied
    return value


def _on_target(model: Any) -> Any:
    device, dtype = _target()
    return copy.deepcopy(model).to(device=device, dtype=dtype)


def _wrap_caching_off(original):
    def caching_off_on_target(model, calls, **tolerance):
        wider = {key: max(tolerance.get(key, 0.0), value) for key, value in TOLERANCE.items()}
        return original(_on_target(model), [(branch, moved(kwargs)) for branch, kwargs in calls], **wider)

    return caching_off_on_target


def _wrap_cached_call(original):
    def cached_call_on_target(model, first, second, branch=None):
        return original(_on_target(model), moved(first), moved(second), branch)

    return cached_call_on_target


class FidelityPlugin:
    """Wraps the proofs before the test modules import them, keeps the tests that call one, records outcomes."""

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, Any]] = {}

    def pytest_configure(self, config) -> None:
        import support  # tests/ is on sys.path once the root conftest is loaded
        import torch

        # Same kernels for the hooked call and the proof's recomputation, so exact equality is meaningful.
        torch.use_deterministic_algorithms(True, warn_only=True)
        support.assert_caching_off_matches_unhooked = _wrap_caching_off(support.assert_caching_off_matches_unhooked)
        support.assert_cached_call_is_input_plus_residual = _wrap_cached_call(
            support.assert_cached_call_is_input_plus_residual
        )

    def pytest_collection_modifyitems(self, config, items) -> None:
        kept, dropped = [], []
        for item in items:
            names = getattr(getattr(item, "function", None), "__code__", None)
            (kept if names is not None and set(PROOFS) & set(names.co_names) else dropped).append(item)
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept

    def pytest_runtest_logreport(self, report) -> None:
        entry = self.outcomes.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0})
        entry["seconds"] += report.duration
        if report.failed or (report.skipped and entry["outcome"] == "passed"):
            entry["outcome"] = report.outcome
            entry["message"] = _first_line(report)

    def pytest_sessionfinish(self, session) -> None:
        path = os.environ.get(REPORT_ENV)
        if path:
            Path(path).write_text(json.dumps(self.outcomes, indent=1))


def _first_line(report) -> str:
    text = str(getattr(report, "longrepr", "") or "")
    lines = [line for line in text.splitlines() if line.startswith("E ")]
    return (lines[0] if lines else text.splitlines()[-1] if text else "")[:300]


_plugin = FidelityPlugin()
pytest_configure = _plugin.pytest_configure
pytest_collection_modifyitems = _plugin.pytest_collection_modifyitems
pytest_runtest_logreport = _plugin.pytest_runtest_logreport
pytest_sessionfinish = _plugin.pytest_sessionfinish


def run_fidelity(device: str, dtype: str, paths: list[str], scratch: Path, timeout: float = 300) -> dict[str, Any]:
    """Run the proofs of the test files `paths` on device/dtype in a subprocess; one outcome per test."""
    report = scratch.resolve() / f"fidelity-{device.replace(':', '')}-{dtype}.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUBLAS_WORKSPACE_CONFIG=":4096:8")
    env.update({DEVICE_ENV: device, DTYPE_ENV: dtype, REPORT_ENV: str(report)})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "benchmarks"), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "gpu_fidelity", *paths]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        tail = (done.stdout + done.stderr)[-2000:]
        returncode = done.returncode
    except subprocess.TimeoutExpired:
        tail, returncode = f"timed out after {timeout:.0f} s", -1
    tests = json.loads(report.read_text()) if report.exists() else {}
    failed = sorted(name for name, entry in tests.items() if entry["outcome"] == "failed")
    return {
        "device": device,
        "dtype": dtype,
        "seconds": round(time.perf_counter() - started, 1),
        "passed": sum(entry["outcome"] == "passed" for entry in tests.values()),
        "failed": failed,
        "skipped": sum(entry["outcome"] == "skipped" for entry in tests.values()),
        "ok": returncode == 0 and bool(tests) and not failed,
        "tests": tests,
        "log_tail": "" if returncode == 0 else tail,
    }
