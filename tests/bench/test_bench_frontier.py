"""teacli bench --prompts / --sweep / --at-calls: caches compared at equal computed calls over many prompts.

The interpolation on synthetic curves (exact values), then one real bench on teacli-shapes (the default
model) with three prompts at 6 steps, and the refusals of bad --at-calls values."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics

import pytest

from teacli.bench.frontier import curve, curves, frontier_rows, interpolate, summary
from teacli.bench.peers import PEERS
from teacli.cli import app
from teacli.generation.measure import PSNR_CAP

PROMPTS = """# three captions from the grammar
a large orange circle on a yellow background at the top

a black square on a green background
a yellow triangle on a black background on the right
"""
FAST = ["--steps", "6", "--runs", "1", "--warmup", "0", "--device", "cpu"]
HAS_CACHE_DIT = importlib.util.find_spec("cache_dit") is not None


# --- interpolation --------------------------------------------------------------------------------------------


def test_interpolation_is_exact_at_points_and_linear_between():
    points = [(10, 30.0), (20, 40.0), (40, 50.0)]
    assert interpolate(points, 10) == 30.0
    assert interpolate(points, 20) == 40.0
    assert interpolate(points, 40) == 50.0
    assert interpolate(points, 15) == pytest.approx(35.0)
    assert interpolate(points, 30) == pytest.approx(45.0)
    assert interpolate(points, 12.5) == pytest.approx(32.5)


def test_interpolation_never_extrapolates():
    points = [(10, 30.0), (20, 40.0)]
    assert interpolate(points, 9.999) is None
    assert interpolate(points, 20.001) is None
    assert interpolate(points, math.nan) is None
    assert interpolate([], 10) is None
    assert interpolate([(12, 33.0)], 12) == 33.0 and interpolate([(12, 33.0)], 13) is None


def test_interpolation_sorts_points_and_merges_ties():
    shuffled = [(40, 50.0), (10, 30.0), (20, 40.0)]
    assert interpolate(shuffled, 30) == pytest.approx(45.0)
    # Two settings at the same mean calls: one point, their mean.
    tied = [(10, 30.0), (20, 38.0), (20, 42.0), (30, 50.0)]
    assert curve(tied) == [(10.0, 30.0), (20.0, 40.0), (30.0, 50.0)]
    assert interpolate(tied, 20) == pytest.approx(40.0)
    assert interpolate(tied, 15) == pytest.approx(35.0)
    # A curve need not be monotone: the line goes through the points as they are.
    assert interpolate([(10, 30.0), (20, 25.0), (30, 40.0)], 25) == pytest.approx(32.5)
    # Values that are missing (SSIM of tiny frames) are no points.
    assert interpolate([(10, None), (20, 40.0), (30, 50.0)], 15) is None


def test_frontier_rows_per_method_and_budget():
    def row(name, method, computed, psnr, ssim=None, total=56):
        return {"name": name, "method": method, "computed": computed, "total": total, "psnr": psnr, "ssim": ssim}

    rows = [
        row("vanilla", "vanilla", 56, PSNR_CAP, 1.0),
        row("teacache@0", "teacache", 56, PSNR_CAP, 1.0),  # caches nothing: no point of the curve
        row("teacache@0.1", "teacache", 30, 48.0, 0.99),
        row("teacache@0.5", "teacache", 12, 34.0, 0.95),
        row("fbcache@0.2", "fbcache", 19, 42.0, 0.98),
        row("fbcache@0.5", "fbcache", 9, 28.0, 0.90),
    ]
    assert list(curves(rows)) == ["teacache", "fbcache"]
    table = {(r["method"], r["calls"]): r for r in frontier_rows(rows, [12, 16, 32])}
    assert set(table) == {(m, c) for m in ("teacache", "fbcache") for c in (12, 16, 32)}
    assert table["teacache", 12]["psnr"] == 34.0 and table["teacache", 12]["ssim"] == 0.95
    assert table["teacache", 16]["psnr"] == pytest.approx(34.0 + 14.0 * 4 / 18)
    assert table["teacache", 32]["psnr"] is None and table["teacache", 32]["ssim"] is None  # not 56's cap
    assert table["fbcache", 12]["psnr"] == pytest.approx(28.0 + 14.0 * 3 / 10)
    assert table["fbcache", 32]["psnr"] is None
    assert [r["method"] for r in frontier_rows(rows, [12, 16])] == ["teacache"] * 2 + ["fbcache"] * 2


def test_summary():
    assert summary([]) == {"mean": None, "std": None, "min": None, "max": None}
    assert summary([3.0]) == {"mean": 3.0, "std": 0.0, "min": 3.0, "max": 3.0}
    values = [1.0, 2.0, 6.0]
    assert summary(values) == {"mean": 3.0, "std": statistics.stdev(values), "min": 1.0, "max": 6.0}


def test_wide_settings_sweep_each_peer_and_keep_the_recipes():
    for name, peer in PEERS.items():
        narrow, wide = peer.settings(28), peer.settings(28, wide=True)
        assert 2 <= len(narrow) <= 3 and 5 <= len(wide) <= 6, name
        for steps in (4, 6, 28, 50):
            labels = [s.label for s in peer.settings(steps, wide=True)]
            assert len(set(labels)) == len(labels) >= 5, (name, steps)
        assert narrow == peer.settings(28, wide=False), name


# --- a real bench ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frontier_bench(tmp_path_factory, teacli_cache):
    """One bench on teacli-shapes: 3 prompts x 6 steps, TeaCache at two thresholds, fbcache and dbcache
    swept (--at-calls implies --sweep), read at two budgets."""
    from typer.testing import CliRunner

    directory = tmp_path_factory.mktemp("frontier")
    (directory / "prompts.txt").write_text(PROMPTS, encoding="utf-8")
    against = "fbcache,dbcache" if HAS_CACHE_DIT else "fbcache"
    args = ["bench", "--prompts", str(directory / "prompts.txt"), *FAST, "--thresh", "0.2,0.8"]
    args += ["--against", against, "--at-calls", "6,8", "--seed", "5", "--json", "-"]
    with pytest.MonkeyPatch.context() as patch:  # as no_user_presets does for each test
        patch.delenv("TEACLI_PRESETS", raising=False)
        patch.setenv("XDG_CONFIG_HOME", str(directory / "xdg-config"))
        patch.setenv("COLUMNS", "200")
        result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout), result.stderr


def test_every_configuration_runs_on_every_prompt(frontier_bench):
    data, _ = frontier_bench
    assert [p["prompt"] for p in data["prompts"]] == [line for line in PROMPTS.splitlines()[1:] if line]
    assert [p["seed"] for p in data["prompts"]] == [5, 6, 7]
    assert data["calls_per_picture"] == 12  # 6 steps, true CFG: two calls a step
    assert data["runs"] == 1 and data["warmup"] == 0 and data["sweep"] is True
    assert data["skipped"] == []  # fbcache runs after dbcache on later prompts: its undo leaves nothing behind
    methods = [row["method"] for row in data["rows"]]
    assert methods[:4] == ["vanilla", "teacache", "teacache", "teacache"]
    assert methods.count("fbcache") == len(PEERS["fbcache"].settings(6, wide=True))
    if HAS_CACHE_DIT:
        assert methods.count("dbcache") == len(PEERS["dbcache"].settings(6, wide=True))
    for row in data["rows"]:
        assert len(row["per_caption"]) == 3 == len(row["seconds"])
        assert [c["seed"] for c in row["per_caption"]] == [5, 6, 7]
        assert row["total"] == 12 and all(c["total"] == 12 for c in row["per_caption"])


def test_means_and_spreads_follow_from_the_per_prompt_values(frontier_bench):
    data, _ = frontier_bench
    for row in data["rows"]:
        captions = row["per_caption"]
        calls = [c["computed"] for c in captions]
        assert row["computed"] == pytest.approx(statistics.fmean(calls))
        assert (row["computed_min"], row["computed_max"]) == (min(calls), max(calls))
        assert row["cached"] == pytest.approx(12 - row["computed"])
        psnr = [c["psnr"] for c in captions]
        assert row["psnr"] == pytest.approx(statistics.fmean(psnr))
        assert row["psnr_std"] == pytest.approx(statistics.stdev(psnr))
        assert (row["psnr_min"], row["psnr_max"]) == (min(psnr), max(psnr))
        assert row["identical_captions"] == sum(c["psnr_capped"] for c in captions)
        assert row["psnr_capped"] == (row["identical_captions"] == 3)
        ssim = [c["ssim"] for c in captions]
        assert row["ssim"] == pytest.approx(statistics.fmean(ssim))
        assert row["seconds_mean"] == pytest.approx(statistics.fmean(c["seconds_median"] for c in captions))
        assert row["seconds"] == [c["seconds_median"] for c in captions]
    vanilla = data["rows"][0]
    assert vanilla["psnr"] == PSNR_CAP and vanilla["psnr_capped"] and vanilla["relative_seconds"] == 1.0
    cached = [row for row in data["rows"] if row["computed"] < 12]
    assert cached and all(row["psnr"] < PSNR_CAP and row["identical_captions"] == 0 for row in cached)


def test_frontier_rows_for_every_method(frontier_bench):
    data, stderr = frontier_bench
    assert data["at_calls"] == [6, 8]
    methods = list(dict.fromkeys(r["method"] for r in data["rows"] if r["method"] != "vanilla"))
    frontier = data["frontier"]
    assert {(r["method"], r["calls"]) for r in frontier} == {(m, c) for m in methods for c in (6, 8)}
    for row in frontier:
        assert set(row) == {"method", "calls", "psnr", "ssim", "checker"}
        assert row["checker"] is None or 0 <= row["checker"] <= 100
        for key in ("psnr", "ssim"):
            assert row[key] is None or math.isfinite(row[key])
    # Each value agrees with the method's own points: interpolated between them, or None outside their range.
    for row in frontier:
        points = [
            (r["computed"], r["psnr"]) for r in data["rows"] if r["method"] == row["method"] and r["computed"] < 12
        ]
        expected = interpolate(points, row["calls"])
        assert row["psnr"] == (pytest.approx(expected) if expected is not None else None)
    assert any(row["psnr"] is not None for row in frontier)
    text = " ".join(stderr.split())
    assert "frontier" in text and "of 12 per picture" in text  # --json -: the tables went to stderr


@pytest.mark.parametrize(
    "value,wanted",
    [
        ("12,abc", "'abc' is not a number"),
        ("0", "'0' is not a finite number above 0"),
        ("-4", "'-4' is not a finite number above 0"),
        ("nan", "'nan' is not a finite number above 0"),
        ("inf", "'inf' is not a finite number above 0"),
    ],
)
def test_bad_at_calls_is_one_line_before_loading(runner, value, wanted):
    result = runner.invoke(app, ["bench", "--at-calls", value, *FAST])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --at-calls") and wanted in lines[0]


def test_at_calls_above_the_calls_of_a_picture_is_one_line(runner, tmp_path):
    result = runner.invoke(app, ["bench", "--at-calls", "8,13", "--against", "none", "--thresh", "0.8", *FAST])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.stderr
    assert "--at-calls 13 is more than the 12 transformer calls" in errors[0]
    assert "Traceback" not in result.output and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "arguments,wanted",
    [
        (["--num-prompts", "2"], "--num-prompts takes the first N of --prompts FILE"),
        (["--prompts", "p.txt", "--prompt", "a red circle"], "give --prompt or --prompts FILE, not both"),
        (["--prompts", "p.txt", "--isolate"], "--isolate measures one prompt"),
        (["--prompts", "missing.txt"], "--prompts missing.txt does not exist"),
        (["--prompts", "p.txt", "--num-prompts", "0"], "--num-prompts must be"),
    ],
)
def test_option_conflicts_are_one_line(runner, tmp_path, arguments, wanted):
    (tmp_path / "p.txt").write_text(PROMPTS, encoding="utf-8")
    result = runner.invoke(app, ["bench", *arguments, *FAST])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and wanted in lines[0], result.stderr


def test_frontier_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from teacli.bench.plot import plot_frontier

    def row(name, method, computed, psnr, speedup):
        return {"name": name, "method": method, "computed": computed, "total": 56, "psnr": psnr, "ssim": 0.9,
                "speedup": speedup}  # fmt: skip

    data = {
        "model": "m", "steps": 28, "device": "cpu", "calls_per_picture": 56, "prompts": [{}, {}], "at_calls": [12, 20],
        "rows": [row("vanilla", "vanilla", 56, PSNR_CAP, 1.0), row("teacache@0.2", "teacache", 19, 41.0, 2.5),
                 row("teacache@0.5", "teacache", 12, 34.0, 3.5), row("fbcache@0.2", "fbcache", 19, 42.0, 2.0)],
    }  # fmt: skip
    plot_frontier(data, tmp_path / "f.png")
    with Image.open(tmp_path / "f.png") as image:
        assert image.format == "PNG" and image.size[0] > 800


def test_the_checker_reads_pictures_of_shapes_captions_only():
    import random

    from PIL import Image

    from teacli.bench.benchmark import checker_reading
    from teacli.demo.shapes import draw, parse_caption

    text = "a large red square on a blue background"
    picture = draw(parse_caption(text), random.Random(0))
    assert checker_reading(text, picture) == (True, True, True)
    assert checker_reading("a small green circle on a blue background", picture) == (True, False, False)
    assert checker_reading("a photo of a cat", picture) is None
    assert checker_reading(text, None) is None
    assert checker_reading("", Image.new("RGB", (8, 8))) is None
