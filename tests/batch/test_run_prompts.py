"""--prompts as a library call: run_prompts(prepare_prompts(PromptsSpec(...))) makes, records and resumes."""

from __future__ import annotations

import pytest

from teacli.batch.prepare import PromptsSpec, prepare_prompts
from teacli.batch.prompt_runs import read_manifest
from teacli.batch.run import PromptsSummary, run_prompts
from teacli.errors import TeacliError


@pytest.fixture
def prompts_file(teacli_cache, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "p.txt"
    path.write_text("a red circle\na blue square\n", encoding="utf-8")
    return path


def test_run_prompts_from_python_makes_each_prompt_then_resumes(prompts_file, tmp_path):
    spec = PromptsSpec(prompts_file, model="tiny-flux", steps=6, device="cpu", out_dir=tmp_path / "out")
    summary = run_prompts(prepare_prompts(spec))
    assert isinstance(summary, PromptsSummary)
    assert (summary.prompts, summary.made, summary.skipped, summary.failed) == (2, 2, 0, 0)
    manifest = tmp_path / "out" / "manifest.jsonl"
    assert [entry["index"] for entry in read_manifest(manifest)] == [0, 1]
    assert all((tmp_path / "out" / entry["file"]).is_file() for entry in read_manifest(manifest))
    again = run_prompts(prepare_prompts(spec))
    assert (again.made, again.skipped) == (0, 2)
    assert again.to_dict()["outputs"] == []


def test_prepare_prompts_refuses_before_loading(prompts_file):
    with pytest.raises(TeacliError, match="not videos"):
        prepare_prompts(PromptsSpec(prompts_file, model="tiny-flux", fps=8.0))
