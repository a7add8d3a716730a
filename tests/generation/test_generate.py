"""generate as a library call: teacli.generate(GenerationSpec(...)) writes the outputs and returns the summary."""

from __future__ import annotations

import pytest

import teacli
from teacli.generation.generate import GenerationSpec, prepare_generation
from teacli.generation.media import read_metadata
from teacli.generation.progress import Progress
from teacli.generation.report import GenerationSummary


class Recorder(Progress):
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.steps_seen: list[tuple[str, int]] = []
        self.loaded: list[str] = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def loading(self, description: str):
        self.loaded.append(description)
        return super().loading(description)

    def steps(self, description: str, total: int):
        self.steps_seen.append((description, total))
        return super().steps(description, total)


@pytest.fixture
def in_tmp(teacli_cache, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_generate_from_python_on_tiny_flux_writes_the_image_and_returns_the_summary(in_tmp):
    progress = Recorder()
    out = in_tmp / "fox.png"
    spec = GenerationSpec("a red circle", model="tiny-flux", steps=6, device="cpu", out=out)
    summary = teacli.generate(spec, progress)
    assert isinstance(summary, GenerationSummary)
    assert summary.model == "tiny-flux" and summary.steps == 6
    assert summary.outputs == [str(out)] and out.is_file()
    assert summary.stats.computed + summary.stats.cached == len(summary.stats.records) > 0
    assert read_metadata(out)["prompt"] == "a red circle"
    assert progress.loaded == ["loading tiny-flux ..."]
    assert progress.steps_seen == [(summary.policy.label, 6)]


def test_generate_from_python_on_teacli_shapes_with_a_baseline(in_tmp):
    summary = teacli.generate(
        GenerationSpec("a red circle", model="teacli-shapes", device="cpu", compare_baseline=True)
    )
    assert summary.model == "teacli-shapes"
    assert summary.baseline_seconds is not None and summary.quality is not None
    assert [in_tmp / name for name in ("teacli-0001.png",)] == [in_tmp / p for p in summary.outputs]


def test_prepare_checks_everything_before_loading(in_tmp):
    progress = Recorder()
    prepared = prepare_generation(
        GenerationSpec("a red circle", model="tiny-flux", steps=3, device="cpu", thresh=5.0), progress
    )
    assert prepared.request.steps == 3 and prepared.policy.thresh == 5.0
    assert len(progress.warnings) == 2 and progress.loaded == []  # a short schedule, a high threshold; nothing loaded
    with pytest.raises(teacli.TeacliError, match="refused because of --strict"):
        prepare_generation(GenerationSpec("a red circle", model="tiny-flux", steps=3, strict=True), progress)
    with pytest.raises(teacli.TeacliError, match="not videos") as error:
        prepare_generation(GenerationSpec("a red circle", model="tiny-flux", fps=8.0))
    assert error.value.field == "fps"
