"""generate --prompts split between processes: two CPU processes on gloo under torchrun and accelerate launch,
each prompt made once, the merged manifest, resume across ranks, images equal to one process's, and a failing
rank that stops every rank instead of hanging them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from teacli.batch.distributed import (
    DistributedError,
    Launch,
    launch_from_env,
    pick_backend,
    rank_device,
    timeout_from_env,
)
from teacli.cli import app

PROMPTS = ["a red circle", "a blue square", "a red circle", "a green triangle", "a yellow star", "a black cross"]
ARGS = ["--model", "tiny-flux", "--steps", "6", "--device", "cpu"]


# --- the launch environment -------------------------------------------------------------------------------------


def test_launch_read_from_the_environment_torchrun_and_accelerate_set():
    assert launch_from_env({}) == Launch() and not Launch().distributed
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    launch = launch_from_env(env)
    assert launch == Launch(3, 4, 1, 2) and launch.distributed and not launch.is_main
    assert launch_from_env({"WORLD_SIZE": "1"}) == Launch()  # torchrun --nproc-per-node 1
    for bad in ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, {"WORLD_SIZE": "x"}, {"WORLD_SIZE": "2"}):
        with pytest.raises(DistributedError):
            launch_from_env(bad)


def test_device_backend_and_timeout():
    launch = Launch(1, 2, 1, 2)
    assert rank_device(launch, "cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert rank_device(launch, "auto") == torch.device("cpu")
    assert pick_backend(launch, torch.device("cpu"), {}) == "gloo"
    assert pick_backend(launch, torch.device("cpu"), {"TEACLI_DIST_BACKEND": "nccl"}) == "nccl"
    with pytest.raises(DistributedError, match="give nccl or gloo"):
        pick_backend(launch, torch.device("cpu"), {"TEACLI_DIST_BACKEND": "mpi"})
    assert timeout_from_env({}) == timedelta(minutes=30)
    assert timeout_from_env({"TEACLI_DIST_TIMEOUT": "90"}) == timedelta(seconds=90)
    with pytest.raises(DistributedError, match="TEACLI_DIST_TIMEOUT"):
        timeout_from_env({"TEACLI_DIST_TIMEOUT": "0"})


def test_a_finished_rank_waits_while_the_others_progress_and_gives_up_when_they_stop():
    import threading
    import time

    from torch.distributed import HashStore

    from teacli.batch.distributed import ProcessGroup

    stalled = ProcessGroup(Launch(0, 2, 0, 2), "gloo", HashStore(), timedelta(seconds=0.3))
    started = time.monotonic()
    with pytest.raises(DistributedError, match="no other process made progress for 0.3 s"):
        stalled.wait_for_others(poll_seconds=0.02)
    assert 0.3 <= time.monotonic() - started < 2

    store = HashStore()
    working = ProcessGroup(Launch(0, 2, 0, 2), "gloo", store, timedelta(seconds=0.3))

    def other_rank():  # steps every 0.1 s for 1 s, then finishes
        for _ in range(10):
            time.sleep(0.1)
            store.add("progress", 1)
        store.add("finished", 1)

    thread = threading.Thread(target=other_rank)
    started = time.monotonic()
    thread.start()
    working.wait_for_others(poll_seconds=0.02)  # longer than the timeout in all, never idle for it
    thread.join()
    assert time.monotonic() - started >= 1.0 and store.add("finished", 0) == 2


# --- two processes on gloo ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(teacli_cache) -> dict:
    # tiny-flux comes from the session's cache (built once by the parent); a failing rank gives up after 60 s.
    return dict(
        os.environ,
        TEACLI_CACHE_DIR=teacli_cache,
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TEACLI_DIST_TIMEOUT="60",
        COLUMNS="200",
        PYTHONUNBUFFERED="1",
    )


def launch(command, cwd, teacli_cache, timeout=240, **env):
    return subprocess.run(
        command, cwd=cwd, env=environment(teacli_cache) | env, capture_output=True, text=True, timeout=timeout
    )


def torchrun(*args):
    port = str(free_port())
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port, *args]


def teacli_module(*args):
    return ["-m", "teacli", "generate", *args]


def manifest_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def single(teacli_cache, tmp_path_factory):
    """The same 6 prompts in this process, one thread like the launched ones: the reference, and tiny-flux built
    in the shared cache before any child needs it."""
    directory = tmp_path_factory.mktemp("single")
    (directory / "p.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(
            app, ["generate", "--prompts", str(directory / "p.txt"), *ARGS, "--out-dir", str(directory), "--json"]
        )
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.stderr
    return directory, manifest_lines(directory / "manifest.jsonl")


def test_torchrun_two_processes_make_each_prompt_once_as_one_process_would(single, teacli_cache, tmp_path):
    reference, reference_lines = single
    shutil.copy(reference / "p.txt", tmp_path / "p.txt")
    done = launch(torchrun(*teacli_module("--prompts", "p.txt", *ARGS, "--out-dir", "out", "--json")), tmp_path,
                  teacli_cache)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # rank 0's report is the only thing on stdout
    out = tmp_path / "out"
    lines = manifest_lines(out / "manifest.jsonl")
    assert [e["index"] for e in lines] == list(range(6))  # each prompt once, in order
    assert {e["rank"] for e in lines} == {0, 1} and all(e["rank"] == e["index"] % 2 for e in lines)
    assert sorted(p.name for p in out.iterdir()) == sorted([e["file"] for e in lines] + ["manifest.jsonl"])
    assert (report["made"], report["world_size"], report["backend"]) == (6, 2, "gloo")
    assert [(r["rank"], r["made"]) for r in report["ranks"]] == [(0, 3), (1, 3)]
    assert report["totals"]["calls"] == 36
    for line, expected in zip(lines, reference_lines):
        assert line["file"] == expected["file"] and line["seed"] == expected["seed"]
        # Each rank keeps its own TeaCache state: the same decisions, and the same pixels, as one process.
        assert [line[k] for k in ("computed", "forced", "cached")] == [
            expected[k] for k in ("computed", "forced", "cached")
        ]
        assert np.array_equal(pixels(out / line["file"]), pixels(reference / expected["file"])), line["file"]
    # Only rank 0 speaks: one report table and one "TeaCache enabled" line, nothing from rank 1.
    assert done.stdout.count('"world_size"') == 1 and done.stderr.count("made 6, skipped 0") == 1
    assert done.stderr.count("TeaCache enabled") == 1


def test_accelerate_launch_resumes_across_ranks_and_merges_leftover_parts(single, teacli_cache, tmp_path):
    reference, reference_lines = single
    out = tmp_path / "out"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("p.txt"))
    shutil.copy(reference / "p.txt", tmp_path / "p.txt")
    manifest = out / "manifest.jsonl"
    # As left by an interrupted 4-process run: prompts 2 and 3 only in a part file, 1 and 4 deleted.
    lines = manifest_lines(manifest)
    manifest.write_text("".join(json.dumps(e) + "\n" for e in lines if e["index"] not in (2, 3)))
    (out / "manifest.rank3.jsonl").write_text("".join(json.dumps(lines[i]) + "\n" for i in (2, 3)))
    for index in (1, 4):
        (out / lines[index]["file"]).unlink()
    command = [
        # The module, not the console script: CI may run without the environment's bin on PATH.
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        *teacli_module("--prompts", "p.txt", *ARGS, "--out-dir", "out", "--json"),
    ]  # fmt: skip
    done = launch(command, tmp_path, teacli_cache)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["made"], report["skipped"], report["world_size"]) == (2, 4, 2)
    assert [(r["rank"], r["made"], r["skipped"]) for r in report["ranks"]] == [(0, 1, 2), (1, 1, 2)]
    merged = manifest_lines(manifest)
    assert [e["index"] for e in merged] == list(range(6)) and not list(out.glob("manifest.rank*"))
    assert merged[2] == lines[2] and merged[3] == lines[3]  # taken from the part file as they were
    assert (merged[1]["rank"], merged[4]["rank"]) == (1, 0)
    for index in (1, 4):
        assert np.array_equal(pixels(out / merged[index]["file"]), pixels(reference / lines[index]["file"]))


# Runs the CLI with generation on rank 1's second prompt failing, or hanging.
FAILING = r"""
import os, sys, time
import teacli.generation.runner
from teacli.generation.runner import GenerationError

real = teacli.generation.runner.generate
made = []

def generate(pipe, request, on_step=None):
    made.append(request.prompt)
    if os.environ["RANK"] == "1" and len(made) == 2:
        if os.environ["FAIL"] == "hang":
            time.sleep(600)
        raise GenerationError("made up failure on rank 1")
    return real(pipe, request, on_step=on_step)

teacli.generation.runner.generate = generate
sys.argv = ["teacli", *sys.argv[1:]]
from teacli.cli import main

main()
"""


def test_a_failing_rank_stops_every_rank_and_what_was_made_is_kept(single, teacli_cache, tmp_path):
    reference, _ = single
    shutil.copy(reference / "p.txt", tmp_path / "p.txt")
    (tmp_path / "failing.py").write_text(FAILING)
    done = launch(torchrun("failing.py", "generate", "--prompts", "p.txt", *ARGS, "--out-dir", "out"), tmp_path,
                  teacli_cache, timeout=200, FAIL="error")  # fmt: skip
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: rank 1: made up failure on rank 1 (the outputs made are recorded; run again to make the rest)"
    ], done.stderr
    lines = manifest_lines(tmp_path / "out" / "manifest.jsonl")
    assert [e["index"] for e in lines] == [0, 1, 2, 4]  # rank 0's three and rank 1's first
    assert not list((tmp_path / "out").glob("manifest.rank*"))


def test_a_hanging_rank_makes_the_others_give_up_after_the_timeout(single, teacli_cache, tmp_path):
    reference, _ = single
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS[:4]) + "\n", encoding="utf-8")
    (tmp_path / "failing.py").write_text(FAILING)
    done = launch(torchrun("failing.py", "generate", "--prompts", "p.txt", *ARGS, "--out-dir", "out"), tmp_path,
                  teacli_cache, timeout=200, FAIL="hang", TEACLI_DIST_TIMEOUT="8")  # fmt: skip
    assert done.returncode != 0  # rank 0 gave up; torchrun then stopped rank 1, still in its 600 s sleep
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: rank 0: no other process made progress for 8 s; gave up waiting for them (TEACLI_DIST_TIMEOUT sets "
        "how long)"
    ], done.stderr
    # Rank 0's two outputs and rank 1's first are in the manifest: a rerun makes only the hung one.
    assert [e["index"] for e in manifest_lines(tmp_path / "out" / "manifest.jsonl")] == [0, 1, 2]
