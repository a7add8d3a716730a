"""teacli bench: the measuring code and the JSON it writes, on tiny-flux (numbers consistent, not fast)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from teacli.cli import app
from teacli.generation.measure import PSNR_CAP, PeakMemory, quality

FIELDS = {
    "name", "method", "setting", "computed", "cached", "total", "seconds", "seconds_median", "seconds_spread",
    "speedup", "ideal_speedup", "efficiency", "psnr", "psnr_capped", "ssim", "peak_memory_bytes",
    "extra_memory_bytes",
}  # fmt: skip
FAST = ["--model", "tiny-flux", "--steps", "6", "--runs", "1", "--warmup", "0", "--device", "cpu"]


def bench(runner, *args):
    result = runner.invoke(app, ["bench", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_json_rows_are_complete_and_consistent(runner, tmp_path):
    result = bench(runner, "--thresh", "0.3,1.0", "--against", "none", *FAST, "--json", "b.json")
    data = json.loads((tmp_path / "b.json").read_text())
    rows = {row["name"]: row for row in data["rows"]}
    assert list(rows) == ["vanilla", "teacache@0", "teacache@0.3", "teacache@1"]
    for row in rows.values():
        assert FIELDS <= set(row), FIELDS - set(row)
        assert row["computed"] + row["cached"] == row["total"] == 6
        assert row["seconds_median"] == row["seconds"][0] > 0 and row["seconds_spread"] == 0.0
        assert row["efficiency"] == pytest.approx(row["speedup"] / row["ideal_speedup"])
        assert row["peak_memory_bytes"] > 0
    vanilla = rows["vanilla"]
    assert (vanilla["speedup"], vanilla["ideal_speedup"], vanilla["efficiency"]) == (1.0, 1.0, 1.0)
    assert vanilla["extra_memory_bytes"] == 0
    # Identical outputs: PSNR is infinite, written as the cap and said so; SSIM is 1.
    for name in ("vanilla", "teacache@0"):
        assert rows[name]["psnr"] == PSNR_CAP and rows[name]["psnr_capped"] is True
        assert rows[name]["ssim"] == pytest.approx(1.0)
    assert rows["teacache@0"]["computed"] == 6
    cached = rows["teacache@1"]
    assert cached["computed"] < 6 and not cached["psnr_capped"] and cached["psnr"] < PSNR_CAP and cached["ssim"] < 1
    # The ideal speedup follows from vanilla's time and its mean seconds per transformer call.
    per_call = data["vanilla_seconds_per_transformer_call"]
    expected = vanilla["seconds_median"] / (vanilla["seconds_median"] - cached["cached"] * per_call)
    assert cached["ideal_speedup"] == pytest.approx(expected)
    assert 0 < data["transformer_share"] < 1
    assert "transformer" in result.output and "of vanilla's time" in result.output
    assert "inf (identical)" in result.output
    # --runs 1: the figures are single measurements, and the report says so under the table and in the JSON.
    assert "note: each configuration was timed once (--runs 1)" in " ".join(result.output.split())
    assert len(data["timing_notes"]) == 1


def test_missing_peers_are_skipped_with_a_line_saying_why(runner, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(  # as where cache-dit is not installed (CI installs it: tests/bench/test_peers_fit.py runs it)
        importlib.util, "find_spec", lambda name, *args: None if name == "cache_dit" else find_spec(name, *args)
    )
    result = bench(runner, "--thresh", "0.3", "--against", "dbcache", *FAST, "--json", "b.json")
    data = json.loads((tmp_path / "b.json").read_text())
    assert [s["method"] for s in data["skipped"]] == ["dbcache"]
    assert "cache-dit" in data["skipped"][0]["reason"]
    assert "skipping dbcache:" in " ".join(result.output.split())
    assert [row["method"] for row in data["rows"]] == ["vanilla", "teacache", "teacache"]


def test_unknown_peer_is_one_line(runner):
    result = runner.invoke(app, ["bench", "--against", "deepcache", *FAST])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "deepcache" in lines[0] and "fbcache" in lines[0]


def test_plot_is_a_png(runner, tmp_path):
    pytest.importorskip("matplotlib")
    bench(runner, "--thresh", "0.3,1.0", "--against", "none", *FAST, "--plot", "p.png")
    with Image.open(tmp_path / "p.png") as image:
        assert image.format == "PNG" and image.size[0] > 400


@pytest.mark.parametrize(
    "arguments,message", [(["--plot", "p.jpg"], "must end in .png"), (["--plot", "x/p.png"], "does not exist")]
)
def test_bad_plot_path_is_refused_before_loading(runner, arguments, message):
    result = runner.invoke(app, ["bench", *FAST, *arguments])
    assert result.exit_code == 1 and message in result.stderr


def test_isolate_runs_each_configuration_in_its_own_process(runner, tmp_path):
    bench(runner, "--thresh", "1.0", "--against", "none", *FAST, "--isolate", "--json", "b.json")
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["isolated"] is True
    rows = {row["name"]: row for row in data["rows"]}
    assert rows["teacache@0"]["psnr_capped"]  # the same image from another process
    assert rows["teacache@1"]["computed"] < rows["teacache@1"]["total"] == 6


def test_quality_of_identical_and_different_images():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    same = quality(image, image.copy())
    assert same.identical and math.isinf(same.psnr) and same.psnr_capped == PSNR_CAP and same.ssim == pytest.approx(1)
    noisy = Image.fromarray(np.clip(pixels.astype(int) + rng.integers(-20, 21, pixels.shape), 0, 255).astype(np.uint8))
    other = quality(noisy, image)
    assert 15 < other.psnr < 40 and 0 < other.ssim < 1 and not other.identical


def test_peak_memory_sees_an_allocation_on_cpu():
    watcher = PeakMemory(torch.device("cpu"))
    with watcher.watch():
        idle = watcher.peak_bytes
    with watcher.watch():
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched, alive when the watch ends
    del block
    assert idle is None and watcher.peak_bytes > 0
    quiet = PeakMemory(torch.device("cpu"))
    with quiet.watch():
        pass
    assert watcher.peak_bytes >= quiet.peak_bytes + 32 * 2**20


def test_bench_spec_from_what_a_user_asks():
    """bench as a library call: request i is prompt i with seed + i, the preset's defaults where nothing was asked."""
    from teacli.bench.suite import bench_spec

    spec = bench_spec(None, ["a", "b"], [0.1], seed=5, settings={"steps": 6}, methods=[], over_prompts=True)
    assert [(r.prompt, r.seed, r.steps) for r in spec.requests] == [("a", 5, 6), ("b", 6, 6)]
    assert spec.preset.name == "teacli-shapes" and spec.methods == [] and spec.runs == 1
    assert bench_spec(None, ["a"], [0.1], methods=None).runs == 3  # every peer, three runs on one prompt


def test_bench_budgets_and_outputs_are_checked_before_loading(tmp_path):
    from teacli.bench.options import BenchError, check_outputs, split_budgets

    assert split_budgets("6, 3x", "auto") == ["6", "3x"] and split_budgets(None, "plan") == []
    with pytest.raises(BenchError, match="bench always runs TeaCache's rule at thresh") as caught:
        split_budgets("6", "teacache")
    assert caught.value.fields == ("thresh", "policy", "budget")
    with pytest.raises(BenchError, match="both name") as caught:
        check_outputs(tmp_path / "same.png", tmp_path / "same.png", overwrite=False)
    assert caught.value.fields == ("json_out", "plot")


# --- the report: tables at 80 columns, the note on noisy timings ------------------------------------------------


def synthetic_result(seconds: dict[str, list[float]], computed: dict[str, int]):
    """A BenchResult whose rows ran `seconds` (one list of runs per config name, vanilla first) at 6 calls each."""
    from teacli.bench.configs import BenchConfig
    from teacli.bench.results import BenchResult, BenchRow
    from teacli.generation.measure import Quality, Run

    rows = []
    for name, runs in seconds.items():
        method = name.split("@")[0]
        psnr = None if name == "vanilla" else math.inf if computed[name] == 6 else 40.0  # inf: identical to vanilla
        row = BenchRow(BenchConfig(name, method), quality=Quality(psnr, 0.99))
        row.runs = [Run(None, s, computed[name], 6, s * 0.6 * computed[name] / 6, 2**29) for s in runs]
        rows.append(row)
    return BenchResult(rows)


CALLS = {"vanilla": 6, "teacache@0.2": 4, "teacache@0.8": 2}


def test_one_run_is_said_to_be_too_noisy_to_read():
    result = synthetic_result({"vanilla": [1.0], "teacache@0.2": [0.8], "teacache@0.8": [0.3]}, CALLS)
    (note,) = result.timing_notes()
    assert "timed once (--runs 1)" in note and "--runs 3" in note
    assert result.to_dict()["timing_notes"] == [note]


def test_a_spread_as_large_as_the_gain_is_named_and_a_clear_gain_is_not():
    runs = {"vanilla": [1.0, 1.1, 1.3], "teacache@0.2": [0.95, 1.0, 1.2], "teacache@0.8": [0.75, 0.76, 0.77]}
    (note,) = synthetic_result(runs, CALLS).timing_notes()
    assert note.startswith("timing noise:") and "teacache@0.2" in note and "teacache@0.8" not in note
    steady = {"vanilla": [1.0, 1.0, 1.01], "teacache@0.2": [0.85, 0.85, 0.86], "teacache@0.8": [0.7, 0.7, 0.71]}
    assert synthetic_result(steady, CALLS).timing_notes() == []


def test_an_efficiency_above_one_is_called_noise():
    runs = {"vanilla": [1.0, 1.0, 1.0], "teacache@0.2": [0.85, 0.85, 0.85], "teacache@0.8": [0.3, 0.3, 0.3]}
    result = synthetic_result(runs, CALLS)
    assert result.efficiency(result.rows[2]) > 1
    (note,) = result.timing_notes()
    assert note.startswith("efficiency above 1 for teacache@0.8:") and "noise" in note


def test_the_bench_table_reads_at_80_columns_with_every_config_name_whole():
    import io

    from rich.cells import cell_len
    from rich.console import Console

    from teacli.bench.report import render_bench

    names = ["vanilla", "teacache@0", "teacache@0.2", "teacache@0.8", "dbcache@F3B0/0.08"]
    result = synthetic_result(
        {name: [1.0 - 0.1 * i, 1.05 - 0.1 * i] for i, name in enumerate(names)},
        {**CALLS, "teacache@0": 6, "dbcache@F3B0/0.08": 3},
    )
    counts = []
    for width in (80, 120, 160):
        console = Console(file=io.StringIO(), width=width, color_system=None)
        render_bench(result, "bench tiny-flux: 6 steps, 2 runs, a title as long as a real one, which wraps", console)
        lines = console.file.getvalue().splitlines()
        assert max(cell_len(line) for line in lines) <= width
        rows = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
        tables = sum(line.startswith("┏") for line in lines)
        assert rows == names * tables  # each stacked table starts with the whole names, "teacache@0.2" not "tea…"
        assert all(header in console.file.getvalue() for header in ("efficiency", "peak memory", "extra"))
        counts.append(tables)
    assert counts[0] > counts[1] > counts[2] == 1  # wider consoles stack less; at 160 one table holds every figure
