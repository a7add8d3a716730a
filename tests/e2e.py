"""End to end through the CLI on an embedded tiny pipeline, with the report's counts proven right.

`generate_and_check` runs `teacli generate` in-process, captures the statistics the report was
rendered from, and checks three things: the table shows exactly those per-branch counts; every
branch made one call per step, with the first and last forced; and replaying the decision rule on
the recorded distances with the preset's coefficients and threshold gives the recorded decisions.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from teacli.cli import app
from teacli.decision import Decision, decide
from teacli.loading import resolve_preset, teacache_configs
from teacli.stats import TeaCacheStats

ROW = re.compile(r"^\W*(?P<label>[\w/#.-]+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│", re.MULTILINE)


def table_counts(output: str) -> dict[str, tuple[int, int, int, int]]:
    """The report table as {branch: (calls, computed, forced, cached)}, 'total' included."""
    return {m["label"]: tuple(int(m.group(i)) for i in range(2, 6)) for m in ROW.finditer(output)}


def replay(stats: TeaCacheStats, configs) -> None:
    """Recompute every non-forced decision from the recorded distance and the running accumulator,
    with each denoiser's own config (`configs`: a TeaCacheConfig or one per denoiser name)."""
    accumulated: dict[tuple, float] = defaultdict(float)
    for record in stats.records:
        key = (record.generation, record.module, record.branch)
        config = configs[record.module] if isinstance(configs, dict) else configs
        verdict = decide(
            distance=record.rel_l1,
            accumulated=accumulated[key],
            coefficients=config.coefficients,
            thresh=config.thresh,
            forced=record.decision is Decision.FORCED,
            x_range=config.rel_l1_range,
        )
        assert verdict.decision is record.decision, f"{key} step {record.step}: replay says {verdict.decision}"
        accumulated[key] = verdict.carried


def generate_and_check(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    preset_name: str,
    *args: str,
    steps: int,
    thresh: float,
    branches: set[str],
    suffix: str = ".png",
) -> tuple[TeaCacheStats, dict[str, tuple[int, int, int, int]]]:
    """Run `teacli generate --model preset_name`, check the report, return (stats, table counts).

    The output goes to tmp_path / (preset_name + suffix): .mp4 / .gif for video models, .wav for audio.
    Branch labels are "module/branch" when several denoisers ran (Wan 2.2's two experts)."""
    import teacli.report

    captured = []
    render = teacli.report.render_generation

    def capture(summary, console):
        captured.append(summary)
        render(summary, console)

    monkeypatch.setattr(teacli.report, "render_generation", capture)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / f"{preset_name}{suffix}"
    result = CliRunner().invoke(
        app,
        ["generate", "an owl on a tree", "--model", preset_name, "--steps", str(steps), "--thresh", str(thresh)]
        + ["--device", "cpu", "--out", str(out), *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()
    (summary,) = captured
    stats = summary.stats
    counts = table_counts(result.output)

    several_modules = len({module for module, _ in stats.branches()}) > 1
    by_branch = {
        f"{module}/{branch}" if several_modules else branch: ((module, branch), totals)
        for (module, branch), totals in stats.by_branch().items()
    }
    assert set(by_branch) == branches
    for label, ((module, branch), totals) in by_branch.items():
        assert counts[label] == (totals.calls, totals.computed, totals.forced, totals.cached)
        decisions = [r.decision for r in stats.records if (r.module, r.branch) == (module, branch)]
        assert decisions[0] is Decision.FORCED, f"{label}: a state's first call is always computed"
        if not several_modules:
            assert totals.calls == steps, f"{label}: one transformer call per step"
            assert decisions[-1] is Decision.FORCED
    assert sum(t.calls for t in stats.by_branch().values()) == len(stats.records)
    total = stats.totals
    assert counts["total"] == (total.calls, total.computed, total.forced, total.cached)

    replay(stats, teacache_configs(resolve_preset(preset_name), thresh))
    return stats, counts


def read_video(path: Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (width, height)) of a written video, read back through imageio."""
    import imageio

    reader = imageio.get_reader(path)
    try:
        return reader.count_frames(), reader.get_meta_data()["size"]
    finally:
        reader.close()
