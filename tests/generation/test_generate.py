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


def test_save_baseline_and_strip_keep_the_uncached_picture_beside_the_cached_one(in_tmp):
    from PIL import Image

    spec = GenerationSpec(
        "a red circle", model="tiny-flux", steps=6, device="cpu", out=in_tmp / "c.png",
        save_baseline=in_tmp / "b.png", strip=in_tmp / "s.png",
    )  # fmt: skip
    summary = teacli.generate(spec)
    assert summary.baseline_seconds is not None  # the baseline ran without --compare-baseline
    assert summary.baseline_outputs == [str(in_tmp / "b.png")] and summary.strip == str(in_tmp / "s.png")
    baseline = read_metadata(in_tmp / "b.png")
    assert baseline["policy"] == "none" and baseline["thresh"] is None and baseline["cached"] == 0
    assert baseline["prompt"] == "a red circle" and baseline["seed"] == read_metadata(in_tmp / "c.png")["seed"]
    with Image.open(in_tmp / "s.png") as strip, Image.open(in_tmp / "b.png") as uncached:
        assert strip.width > 2 * uncached.width and strip.height > uncached.height  # two enlarged pictures, a label
    data = summary.to_dict()
    assert data["baseline_outputs"] == summary.baseline_outputs and data["strip"] == summary.strip


def test_the_summary_records_the_request_as_the_png_does(in_tmp):
    spec = GenerationSpec("a red circle", model="tiny-flux", steps=6, seed=7, guidance=2.5, device="cpu")
    request = teacli.generate(spec).to_dict()["request"]
    stored = read_metadata(in_tmp / "teacli-0001.png")
    assert request["prompt"] == "a red circle" and request["steps"] == 6 and request["seed"] == 7
    assert {key: stored[key] for key in request} == request  # the same fields and values as the file


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"strip": "c.png"}, "must be different files"),
        ({"save_baseline": "c.png"}, "must be different files"),
        ({"strip": "s.mp4"}, "cannot write one as '.mp4'"),
    ],
)
def test_comparison_files_are_refused_before_anything_loads(in_tmp, changes, message):
    from teacli.errors import TeacliError

    with pytest.raises(TeacliError, match=message):
        prepare_generation(GenerationSpec("a red circle", model="tiny-flux", out=in_tmp / "c.png", **changes))
    assert list(in_tmp.iterdir()) == []


def test_an_existing_baseline_file_is_refused_like_out(in_tmp):
    from teacli.generation.output import OutputError

    (in_tmp / "b.png").write_bytes(b"the user's")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        prepare_generation(GenerationSpec("a red circle", model="tiny-flux", save_baseline=in_tmp / "b.png"))
    assert (in_tmp / "b.png").read_bytes() == b"the user's"


def test_spec_from_options_gathers_the_loading_and_cache_options():
    from teacli.generation.options import spec_from_options

    values = {"prompt": "a cat", "coefficients": "1,2", "start": 0.2, "offline": False, "lora_scale": 0.5}
    spec = spec_from_options(GenerationSpec, {**values, "unrelated": 1})
    assert spec.coefficients == (1.0, 2.0) and spec.cache.start == 0.2 and spec.load.lora_scale == 0.5
