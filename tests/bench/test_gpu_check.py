"""benchmarks/gpu_check.py, the device check, kept working on the CPU: its --smoke run writes the JSON and the
markdown table that a GPU run writes, with every FLUX row run (eager, regional compile, offloaded, int8) and the
fidelity proofs run through its pytest plugin on a device and dtype of its choosing."""

import json
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
SHARED_PROOF = "tests/extractors/test_extractor_flux.py::test_shared_fidelity_proofs_hold_for_flux"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_check

    return gpu_check


def test_smoke_run_writes_every_flux_row_to_json_and_markdown(gpu_check, tmp_path):
    code = gpu_check.main(["--smoke", "--skip-fidelity", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 0 and report["ok"] and report["smoke"]
    assert {"torch", "diffusers", "gpu", "device"} <= set(report["environment"])
    flux = report["flux"]
    assert flux["compiled_blocks"] == 4  # 2 double- and 2 single-stream blocks, compiled with the eager backend
    names = [row["name"] for row in flux["rows"]]
    thresholds = ["vanilla", "teacache@0", "teacache@0.25", "teacache@0.4", "teacache@0.6"]
    assert names == thresholds + [f"{name} +compile" for name in thresholds] + [
        "vanilla +offload",
        "teacache@0.4 +offload",
        "vanilla +int8",
        "teacache@0.4 +int8",
    ]
    steps = flux["steps"]
    for row in flux["rows"]:
        assert row["error"] is None and row["total"] == steps and 2 <= row["computed"] <= steps
        assert row["seconds"] > 0 and row["speedup"] > 0
        assert row["efficiency"] == pytest.approx(row["speedup"] / row["ideal_speedup"], abs=2e-3)
    by_name = {row["name"]: row for row in flux["rows"]}
    for suffix in ("", " +compile"):
        assert by_name["teacache@0" + suffix]["computed"] == steps  # threshold 0 computes every call
        assert by_name["teacache@0" + suffix]["change_vs_vanilla"] < 1e-5  # and returns vanilla's latents
        assert by_name["teacache@0.6" + suffix]["computed"] < steps
    assert by_name["teacache@0.4 +offload"]["offload"].startswith("group offloading")
    assert by_name["teacache@0.4 +int8"]["quantize"] == "torchao-int8" and by_name["vanilla"]["quantize"] is None
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| row | computed/total | seconds | speedup |" in table
    for name in names:
        assert f"| {name} | {by_name[name]['computed']}/{steps} |" in table


def test_smoke_fidelity_runs_the_shared_proofs_cast_to_bf16(gpu_check, tmp_path):
    code = gpu_check.main(["--smoke", "--skip-flux", "--out", str(tmp_path), "--fidelity-tests", SHARED_PROOF])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    (run,) = report["fidelity"]
    assert code == 0 and run["ok"], run["log_tail"]
    assert (run["device"], run["dtype"], run["passed"], run["failed"]) == ("cpu", "bfloat16", 1, [])
    assert "| tests/extractors on cpu | bfloat16 | 1 | 0 | 0 |" in (tmp_path / "gpu_check.md").read_text()


def test_the_plugin_moves_floating_inputs_to_the_target_dtype_and_keeps_the_rest(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_fidelity

    monkeypatch.setenv(gpu_fidelity.DTYPE_ENV, "bfloat16")
    inputs = {"x": torch.ones(2), "ids": torch.arange(3), "rope": torch.ones(2, dtype=torch.complex64)}
    inputs.update(blocks=[torch.zeros(1)], kwargs={"scale": 0.5}, flag=None)
    moved = gpu_fidelity.moved(inputs)
    assert moved["x"].dtype == torch.bfloat16 and moved["blocks"][0].dtype == torch.bfloat16
    assert moved["ids"].dtype == torch.int64 and moved["rope"].dtype == torch.complex64
    assert moved["kwargs"] == {"scale": 0.5} and moved["flag"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_and_without_smoke_it_refuses_with_exit_status_2(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()


def test_the_plugin_moves_the_tensors_of_a_state_object_in_a_copy(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_fidelity

    class Cache:
        def __init__(self):
            self.keys, self.mode = [torch.ones(2)], "cached"

    monkeypatch.setenv(gpu_fidelity.DTYPE_ENV, "float16")
    original = Cache()
    copy = gpu_fidelity.moved({"kv_cache": original})["kv_cache"]
    assert isinstance(copy, Cache) and copy is not original and copy.mode == "cached"
    assert copy.keys[0].dtype == torch.float16 and original.keys[0].dtype == torch.float32
