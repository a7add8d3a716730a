"""generate --prompts: the prompts file, output names, the manifest and resuming, in one process on tiny-flux."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from teacli.batch.prompt_runs import (
    ManifestError,
    ManifestWriter,
    Plan,
    PromptJob,
    merge_manifest,
    output_name,
    part_path,
    plan_jobs,
    read_manifest,
    read_prompt_jobs,
    recorded_entries,
    slugify,
)
from teacli.batch.prompts import PromptsError
from teacli.cli import app
from teacli.generation.media import read_metadata
from teacli.generation.output import OutputError

FAST = ["--model", "tiny-flux", "--steps", "6", "--device", "cpu"]
PROMPTS = ["a red circle", "a blue square", "a red circle"]  # a duplicate: its own index, seed and file


@pytest.fixture
def runner(teacli_cache, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def run(runner, *args, code=0):
    result = runner.invoke(app, ["generate", *args], catch_exceptions=False)
    assert result.exit_code == code, result.stderr
    return result


def run_json(runner, *args) -> dict:
    return json.loads(run(runner, *args, "--json").stdout)


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the prompts file ----------------------------------------------------------------------------------------


def test_text_file_skips_blanks_and_comments_and_seeds_each_prompt_from_its_index(tmp_path):
    path = write(tmp_path / "p.txt", ["# mine", "", "  a cat  ", "a dog", "# end", "a cat"])
    jobs = read_prompt_jobs(path, base_seed=10)
    assert [(j.index, j.prompt, j.seed, j.options) for j in jobs] == [
        (0, "a cat", 10, {}),
        (1, "a dog", 11, {}),
        (2, "a cat", 12, {}),
    ]


def test_jsonl_options_seed_and_null(tmp_path):
    lines = [
        '{"prompt": "a cat", "seed": 7, "steps": 8, "guidance": 2, "negative_prompt": "blur", "thresh": 0}',
        "# a comment",
        '{"prompt": "a dog", "seed": null, "height": 32, "width": 48, "true_cfg": 3.5}',
    ]
    jobs = read_prompt_jobs(write(tmp_path / "p.jsonl", lines), base_seed=100)
    options = {"steps": 8, "guidance": 2.0, "negative_prompt": "blur", "thresh": 0.0}
    assert jobs[0] == PromptJob(0, "a cat", 7, options, 1)
    assert jobs[1] == PromptJob(1, "a dog", 101, {"height": 32, "width": 48, "true_cfg": 3.5}, 3)  # null: default


def test_a_txt_file_of_json_objects_is_jsonl_and_one_plain_line_makes_it_text(tmp_path):
    jobs = read_prompt_jobs(write(tmp_path / "a.txt", ['{"prompt": "x", "seed": 3}']))
    assert (jobs[0].prompt, jobs[0].seed) == ("x", 3)
    jobs = read_prompt_jobs(write(tmp_path / "b.txt", ['{"prompt": "x"}', "plain"]))
    assert [j.prompt for j in jobs] == ['{"prompt": "x"}', "plain"]


BAD_LINES = [
    ('{"prompt": "a",}', "line 2 is not valid JSON"),
    ('["a"]', "line 2 is not a JSON object"),
    ('{"prompt": "a", "sed": 1}', "line 2: unknown key 'sed'; did you mean 'seed'?"),
    ('{"prompt": "a", "image": "x.png"}', "line 2: unknown key 'image'; a line takes prompt, seed"),
    ('{"seed": 1}', 'line 2 needs "prompt": a non-empty string'),
    ('{"prompt": "  "}', 'line 2 needs "prompt"'),
    ('{"prompt": "a", "steps": 1}', "line 2: 'steps' must be an integer between 2 and 10000, got 1"),
    ('{"prompt": "a", "steps": 6.5}', "line 2: 'steps' must be an integer between 2 and 10000, got 6.5"),
    ('{"prompt": "a", "steps": 99999999999999999999999}', "line 2: 'steps' must be an integer between 2 and 10000"),
    ('{"prompt": "a", "seed": -1}', "line 2: 'seed' must be an integer between 0 and 18446744073709551615, got -1"),
    ('{"prompt": "a", "seed": true}', "line 2: 'seed' must be an integer between 0 and 18446744073709551615, got True"),
    ('{"prompt": "a", "seed": 36893488147419103232}', "line 2: 'seed' must be an integer between 0 and 1844"),
    ('{"prompt": "a", "height": 0}', "line 2: 'height' must be an integer between 1 and 16384, got 0"),
    ('{"prompt": "a", "thresh": -0.1}', "line 2: 'thresh' must be a finite number between 0 and 1e+06, got -0.1"),
    (
        '{"prompt": "a", "guidance": "high"}',
        "line 2: 'guidance' must be a finite number between 0 and 1000, got 'high'",
    ),
    ('{"prompt": "a", "guidance": 1e400}', "line 2: 'guidance' must be a finite number between 0 and 1000, got inf"),
    ('{"prompt": "a", "true_cfg": NaN}', "line 2: 'true_cfg' must be a finite number between 0 and 1000, got nan"),
    ('{"prompt": "a", "fps": 0}', "line 2: 'fps' must be a finite number between 0.1 and 1000, got 0"),
    ('{"prompt": "a", "negative_prompt": 3}', "line 2: 'negative_prompt' must be a string"),
]


@pytest.mark.parametrize("line, message", BAD_LINES, ids=[m.split(": ")[-1][:30] for _, m in BAD_LINES])
def test_a_bad_jsonl_line_is_refused_with_its_line_number(tmp_path, line, message):
    path = write(tmp_path / "p.jsonl", ['{"prompt": "fine"}', line])
    with pytest.raises(PromptsError) as error:
        read_prompt_jobs(path)
    assert message in str(error.value) and str(path) in str(error.value)


# --- names ---------------------------------------------------------------------------------------------------


def test_names_are_stable_readable_and_never_shared():
    assert slugify("A Café, at NIGHT!!") == "a-cafe-at-night"
    assert slugify("東京") == "prompt" and slugify("") == "prompt"
    long = slugify("word " * 40)
    assert len(long) <= 40 and not long.endswith("-")
    jobs = [PromptJob(i, prompt, i) for i, prompt in enumerate(["a cat", "a cat", "A CAT!"])]
    names = [output_name(job, ".png") for job in jobs]
    assert names == ["00000-a-cat-s0.png", "00001-a-cat-s1.png", "00002-a-cat-s2.png"]
    assert output_name(PromptJob(1, "a cat", 5), ".png") == "00001-a-cat-s5.png" != names[1]  # the seed shows


# --- the manifest, at library level ----------------------------------------------------------------------------


def entry(index, prompt="p", seed=None, file=None, **more):
    seed = index if seed is None else seed
    fields = {"options": {}, "settings": {}, "file": file or f"{index}.png", "computed": 1, "calls": 2, **more}
    return {"index": index, "prompt": prompt, "seed": seed, **fields}


def test_writer_appends_whole_lines_and_cuts_a_line_an_interrupted_run_left(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(entry(0)) + "\n" + '{"index": 1, "pro', encoding="utf-8")
    assert [e["index"] for e in read_manifest(path)] == [0]  # the cut line is not an entry
    with ManifestWriter(path) as writer:
        writer.append(entry(2))
    assert path.read_text(encoding="utf-8").endswith("\n")
    assert [e["index"] for e in read_manifest(path)] == [0, 2]


def test_a_broken_line_inside_the_manifest_is_an_error_naming_it(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(entry(0)) + "\nnot json\n" + json.dumps(entry(1)) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="line 2 is not a teacli manifest line"):
        read_manifest(path)


def test_merge_takes_parts_in_dedups_by_index_later_wins_and_removes_the_parts(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(entry(i)) + "\n" for i in (2, 0)), encoding="utf-8")
    part_path(manifest, 1).write_text(json.dumps(entry(1)) + "\n" + json.dumps(entry(2, file="new.png")) + "\n")
    part_path(manifest, 3).write_text(json.dumps(entry(3)) + "\n")
    assert recorded_entries(manifest)[2]["file"] == "new.png"
    lines = merge_manifest(manifest, [entry(4)])
    assert [e["index"] for e in lines] == [0, 1, 2, 3, 4] == [e["index"] for e in read_manifest(manifest)]
    assert lines[2]["file"] == "new.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]


def make_plan(tmp_path, jobs, **options):
    return plan_jobs(jobs, tmp_path / "manifest.jsonl", tmp_path, ".png", lambda job: {"steps": 6}, **options)


def test_plan_skips_what_is_recorded_and_on_disk_and_makes_the_rest(tmp_path):
    jobs = [PromptJob(i, f"p{i}", i) for i in range(4)]
    records = [entry(i, f"p{i}", file=output_name(jobs[i], ".png"), settings={"steps": 6}) for i in (0, 1)]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / records[0]["file"]).write_bytes(b"png")  # 1 is recorded, but its file was deleted
    plan = make_plan(tmp_path, jobs)
    assert [job.index for job, _ in plan.skipped] == [0]
    assert [job.index for job in plan.todo] == [1, 2, 3]
    assert [job.index for job in make_plan(tmp_path, jobs, overwrite=True).todo] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "recorded, message",
    [
        (entry(0, "another prompt", settings={"steps": 6}), 'records prompt 0 as "another prompt", not "p0"'),
        (entry(0, "p0", seed=9, settings={"steps": 6}), "made prompt 0 with seed 9, not 0"),
        (entry(0, "p0", settings={"steps": 8}), "made prompt 0 with steps 8, not 6"),
    ],
)
def test_a_manifest_of_other_prompts_or_settings_is_refused(tmp_path, recorded, message):
    (tmp_path / "manifest.jsonl").write_text(json.dumps(recorded) + "\n")
    with pytest.raises(ManifestError, match="pick another --manifest or --out-dir") as error:
        make_plan(tmp_path, [PromptJob(0, "p0", 0)])
    assert message in str(error.value)


def test_a_file_in_the_way_is_refused_unless_it_is_this_prompts_or_overwrite(tmp_path):
    job = PromptJob(0, "p0", 0)
    (tmp_path / output_name(job, ".png")).write_bytes(b"someone else's")
    with pytest.raises(OutputError, match="already exists and the manifest does not list it"):
        make_plan(tmp_path, [job])
    assert make_plan(tmp_path, [job], made_for=lambda path, job, settings: True).replace == {0}
    assert make_plan(tmp_path, [job], overwrite=True).replace == {0}


def test_shards_cover_every_prompt_once():
    plan = Plan(todo=[PromptJob(i, "p", i) for i in range(7)], replace={1, 4})
    shards = [plan.shard(rank, 3) for rank in range(3)]
    assert [[job.index for job in shard.todo] for shard in shards] == [[0, 3, 6], [1, 4], [2, 5]]
    assert [shard.replace for shard in shards] == [set(), {1, 4}, set()]


# --- the command line ------------------------------------------------------------------------------------------


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def manifest_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prompts_run_writes_one_file_per_prompt_then_resumes(runner, tmp_path):
    write(tmp_path / "p.txt", PROMPTS)
    report = run_json(runner, "--prompts", "p.txt", *FAST, "--out-dir", "out", "--seed", "3")
    names = ["00000-a-red-circle-s3.png", "00001-a-blue-square-s4.png", "00002-a-red-circle-s5.png"]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [*names, "manifest.jsonl"]
    assert (report["made"], report["skipped"], report["failed"]) == (3, 0, 0)
    assert report["outputs"] == [f"out/{name}" for name in names]  # as the user named the folder
    lines = manifest_lines(out / "manifest.jsonl")
    assert [(e["index"], e["prompt"], e["seed"], e["file"], e["rank"]) for e in lines] == [
        (i, p, 3 + i, name, 0) for i, (p, name) in enumerate(zip(PROMPTS, names))
    ]
    for line in lines:
        assert line["calls"] == 6 == line["computed"] + line["forced"] + line["cached"]  # each prompt: its own counts
        assert line["settings"]["steps"] == 6 and line["seconds"] > 0
        metadata = read_metadata(out / line["file"])
        assert (metadata["prompt"], metadata["seed"], metadata["calls"]) == (line["prompt"], line["seed"], 6)
        assert metadata["prompts"] == {"file": "p.txt", "index": line["index"], "rank": 0}
    assert report["totals"]["calls"] == 18 and report["totals"]["cached"] == sum(e["cached"] for e in lines)
    assert not (pixels(out / names[0]) == pixels(out / names[2])).all()  # same prompt, its own seed

    again = run_json(runner, "--prompts", "p.txt", *FAST, "--out-dir", "out", "--seed", "3")
    assert (again["made"], again["skipped"], again["outputs"]) == (0, 3, [])
    assert again["ranks"][0]["model_loaded"] is False  # nothing left to make: the model is not even loaded
    assert manifest_lines(out / "manifest.jsonl") == lines

    (out / names[1]).unlink()
    third = run_json(runner, "--prompts", "p.txt", *FAST, "--out-dir", "out", "--seed", "3")
    assert (third["made"], third["skipped"], third["outputs"]) == (1, 2, [f"out/{names[1]}"])
    remade = manifest_lines(out / "manifest.jsonl")
    assert [e["index"] for e in remade] == [0, 1, 2] and remade[0] == lines[0] and remade[2] == lines[2]
    assert remade[1]["created"] >= lines[1]["created"] and (out / names[1]).is_file()


def test_each_prompt_is_what_a_single_generate_makes_and_per_prompt_thresh_applies(runner, tmp_path):
    lines = [
        '{"prompt": "a red circle", "thresh": 0}',
        '{"prompt": "a blue square", "seed": 42, "negative_prompt": "a green square"}',
        '{"prompt": "a red circle"}',
    ]
    write(tmp_path / "p.jsonl", lines)
    report = run_json(runner, "--prompts", "p.jsonl", *FAST, "--thresh", "0.4")
    entries = manifest_lines(tmp_path / "manifest.jsonl")
    assert entries[0]["cached"] == 0 and entries[0]["settings"]["thresh"] == 0.0  # the line's thresh
    assert entries[2]["cached"] > 0 and entries[2]["settings"]["thresh"] == 0.4
    assert entries[1]["calls"] == 12 and entries[1]["options"] == {"negative_prompt": "a green square"}
    assert report["made"] == 3
    # A reset TeaCache is as good as a fresh one: prompt 2 comes out as a single generate makes it.
    run(runner, "a red circle", *FAST, "--thresh", "0.4", "--seed", "2", "-o", "single.png")
    assert (pixels(tmp_path / entries[2]["file"]) == pixels(tmp_path / "single.png")).all()
    run(runner, "a blue square", *FAST, "--thresh", "0.4", "--seed", "42", "--negative-prompt", "a green square",
        "-o", "single-cfg.png")  # fmt: skip
    assert (pixels(tmp_path / entries[1]["file"]) == pixels(tmp_path / "single-cfg.png")).all()


def test_an_unrecorded_output_of_the_same_prompt_is_remade_and_a_foreign_file_is_refused(runner, tmp_path):
    write(tmp_path / "p.txt", PROMPTS[:2])
    run(runner, "--prompts", "p.txt", *FAST)
    (tmp_path / "manifest.jsonl").unlink()  # as if stopped between writing the files and recording them
    assert run_json(runner, "--prompts", "p.txt", *FAST)["made"] == 2
    Image.new("RGB", (8, 8)).save(tmp_path / "00000-a-red-circle-s0.png")  # not teacli's
    (tmp_path / "manifest.jsonl").unlink()
    result = run(runner, "--prompts", "p.txt", *FAST, code=1)
    assert result.stderr.count("error:") == 1 and "00000-a-red-circle-s0.png already exists" in result.stderr
    assert run_json(runner, "--prompts", "p.txt", *FAST, "--overwrite")["made"] == 2


def test_ctrl_c_leaves_whole_manifest_lines_and_the_rerun_makes_the_rest(runner, tmp_path, monkeypatch):
    import teacli.generation.measure as measure

    real = measure.measure_generation
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(measure, "measure_generation", interrupted)
    write(tmp_path / "p.txt", PROMPTS)
    result = run(runner, "--prompts", "p.txt", *FAST, code=130)
    assert "interrupted; 1 output(s)" in result.stderr and "run the same command again" in result.stderr
    assert [e["index"] for e in manifest_lines(tmp_path / "manifest.jsonl")] == [0]
    monkeypatch.setattr(measure, "measure_generation", real)
    report = run_json(runner, "--prompts", "p.txt", *FAST)
    assert (report["made"], report["skipped"]) == (2, 1)
    assert [e["index"] for e in manifest_lines(tmp_path / "manifest.jsonl")] == [0, 1, 2]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give a PROMPT, or --prompts FILE"),
        (["a cat", "--prompts", "p.txt"], "give a PROMPT or --prompts FILE, not both"),
        (["a cat", "--out-dir", "d"], "--out-dir and --manifest go with --prompts"),
        (["--prompts", "p.txt", "-o", "x.png"], "--out names one file; with --prompts"),
        (["--prompts", "p.txt", "-n", "2"], "--num-images goes with one PROMPT"),
        (
            ["--prompts", "p.txt", "--compare-baseline"],
            "--compare-baseline, --save-baseline and --strip go with one PROMPT",
        ),
        (["--prompts", "missing.txt"], "--prompts missing.txt does not exist"),
        (["--prompts", "bad.jsonl"], "bad.jsonl line 1: unknown key 'sed'"),
        (["--prompts", "fps.jsonl"], "fps.jsonl line 1: tiny-flux makes images, not videos; drop 'fps'"),
        (["--prompts", "frames.jsonl"], "frames.jsonl line 2: tiny-flux (FluxPipeline) takes no num_frames"),
        (["--prompts", "p.txt", "--out-dir", "p.txt"], "--out-dir p.txt is a file"),
        (["--prompts", "p.txt", "--manifest", "nowhere/m.jsonl"], "manifest directory nowhere does not exist"),
        (["--prompts", "p.txt", "--steps", "3", "--strict"], "3 steps: TeaCache always computes"),
    ],
)
def test_bad_prompts_invocations_are_one_line_before_loading(runner, tmp_path, args, message):
    write(tmp_path / "p.txt", ["a cat"])
    write(tmp_path / "bad.jsonl", ['{"prompt": "a", "sed": 1}'])
    write(tmp_path / "fps.jsonl", ['{"prompt": "a", "fps": 8}'])
    write(tmp_path / "frames.jsonl", ['{"prompt": "a"}', '{"prompt": "b", "frames": 9}'])
    result = runner.invoke(app, ["generate", *args, "--model", "tiny-flux", "--device", "cpu"])
    assert result.exit_code == (2 if "give a PROMPT" in message else 1)  # no prompt at all: a usage error
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "manifest.jsonl").exists()


def test_a_manifest_of_another_prompts_file_is_one_line(runner, tmp_path):
    write(tmp_path / "p.txt", ["a cat"])
    run(runner, "--prompts", "p.txt", *FAST)
    write(tmp_path / "q.txt", ["a dog"])
    result = run(runner, "--prompts", "q.txt", *FAST, code=1)
    assert result.stderr.count("\n") == 1 and "it belongs to another prompts file" in result.stderr
