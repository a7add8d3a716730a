"""bench over several quantizations: one pipeline alive at a time, every row scored against the first's vanilla."""

from __future__ import annotations

import weakref

import teacli.bench.suite as suite
import teacli.generation.preparation as preparation
from teacli.bench.suite import bench_spec, run_benchmark


def test_each_quantization_frees_its_pipeline_before_the_next_loads(teacli_cache, monkeypatch):
    loaded, alive = [], []
    load, free = preparation.prepare_pipeline, suite.free_memory

    def tracked(*args, **kwargs):
        pipe = load(*args, **kwargs)
        loaded.append(weakref.ref(pipe.transformer))
        return pipe

    def counted(device):
        free(device)
        alive.append(sum(ref() is not None for ref in loaded))

    monkeypatch.setattr(preparation, "prepare_pipeline", tracked)
    monkeypatch.setattr(suite, "free_memory", counted)
    spec = bench_spec(
        "tiny-flux", ["a red circle"], [0.3], settings={"steps": 4}, methods=[], runs=1, warmup=0, device="cpu",
        quantizations=[None, "torchao-int8"],
    )  # fmt: skip
    report = run_benchmark(spec)
    assert alive == [0, 0]  # after each group, no pipeline is left
    names = [row.name for row in report.result.rows]
    assert names == [
        "vanilla", "teacache@0", "teacache@0.3", "vanilla +torchao-int8", "teacache@0 +torchao-int8",
        "teacache@0.3 +torchao-int8",
    ]  # fmt: skip
    assert report.result.vanilla.name == "vanilla"  # the reference of every speedup and PSNR
