"""cache-dit's DBCache on teacli-shapes (the default model): its settings fitted to the model's blocks, separate
CFG where the pipeline runs true CFG, cache-dit's log lines off stdout, its failures one line, never a traceback."""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("cache_dit")

from teacli.bench.benchmark import ConfigRunner, bench_configs, run_bench  # noqa: E402
from teacli.bench.peers import (
    PEERS,
    REASON_CHARS,
    DBCachePeer,
    PeerError,
    PeerSetting,
    cached_block_count,
    count_transformer_calls,
    fit_compute_blocks,
    runs_true_cfg,
)
from teacli.generation.runner import GenerationRequest, generate  # noqa: E402

STEPS = 8
DBCACHE = PEERS["dbcache"]
FAST = ["--steps", "4", "--runs", "1", "--warmup", "0", "--device", "cpu", "--thresh", "0.3"]


@pytest.fixture(scope="module")
def preset(shapes_preset):
    return shapes_preset


@pytest.fixture(scope="module")
def pipe(shapes_pipe):
    return shapes_pipe


def request(preset, **overrides) -> GenerationRequest:
    # the preset's defaults: true CFG 3.0 with an empty negative prompt, so cond and uncond are two calls a step
    return GenerationRequest.from_preset(preset, "a red circle on a blue background", **{"steps": STEPS, **overrides})


@pytest.fixture
def quiet_teacli():
    """teacli's logger as `teacli bench` leaves it without --verbose; restored afterwards."""
    logger = logging.getLogger("teacli")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.WARNING)
    logger.propagate = True  # a CLI test earlier in the session stops propagation; caplog listens at the root
    yield logger
    logger.setLevel(level)
    logger.propagate = propagate


# --- the command line, as a user runs it ------------------------------------------------------------------


def teacli(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "TEACLI_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("CACHE_DIT_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "teacli", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )


def test_bench_all_on_the_default_model_prints_json_alone_with_the_adapted_dbcache_rows(tmp_path):
    done = teacli("bench", "--against", "all", *FAST, "--json", "-", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    data = json.loads(done.stdout)  # nothing of cache-dit's (or anyone's) on stdout but the JSON
    assert data["model"] == "teacli-shapes" and data["skipped"] == []
    rows = {row["name"]: row for row in data["rows"]}
    # teacli-shapes has 2 + 4 blocks, which cache-dit's FLUX.1 adapter caches as one list of 6: F8 runs as F5
    assert [name for name in rows if name.startswith("dbcache@")] == [
        "dbcache@F5B0/0.08",
        "dbcache@F1B0/0.08",
        "dbcache@F1B0/0.2",
    ]
    adapted = rows["dbcache@F5B0/0.08"]
    assert adapted["adapted_from"] == "dbcache@F8B0/0.08"
    assert "6 transformer blocks" in adapted["adaptation"]
    assert "Fn_compute_blocks=5,Bn_compute_blocks=0" in adapted["setting"]
    assert rows["dbcache@F1B0/0.2"]["adapted_from"] is None
    for name in ("dbcache@F5B0/0.08", "dbcache@F1B0/0.08", "dbcache@F1B0/0.2"):
        assert "enable_separate_cfg=1" in rows[name]["setting"]  # true CFG: two calls a step
        assert rows[name]["total"] == 2 * 4
    # the adaptation is said in one line on stderr
    assert "dbcache@F8B0/0.08 runs as dbcache@F5B0/0.08" in " ".join(done.stderr.split())


def test_plain_bench_against_dbcache_runs_and_keeps_cache_dit_off_stdout(tmp_path):
    done = teacli("bench", "--against", "dbcache", *FAST, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Fn_compute_blocks 8 must be" not in done.stderr
    assert "Cache-DiT" not in done.stdout and "Cache-DiT" not in done.stderr  # quiet unless --verbose
    assert "dbcache@F5B0/0.08" in done.stdout and "dbcache@F1B0/0.2" in done.stdout


# --- fitting Fn and Bn to the blocks ----------------------------------------------------------------------


def test_fn_bn_clamp_for_a_6_block_and_a_2_block_model():
    assert fit_compute_blocks(8, 0, 6) == (5, 0)
    assert fit_compute_blocks(1, 0, 6) == (1, 0)
    assert fit_compute_blocks(3, 3, 6) == (2, 3)
    assert fit_compute_blocks(1, 8, 6) == (1, 4)
    assert fit_compute_blocks(8, 0, 2) == (1, 0)
    assert fit_compute_blocks(1, 1, 2) == (1, 0)
    assert fit_compute_blocks(8, 0, 28) == (8, 0)  # fits: unchanged
    for blocks in (0, 1):
        with pytest.raises(PeerError, match="needs 2\\+ transformer blocks"):
            fit_compute_blocks(1, 0, blocks)


@pytest.mark.parametrize("blocks,labels", [
    (6, ["dbcache@F5B0/0.08", "dbcache@F1B0/0.08", "dbcache@F1B0/0.2"]),
    (2, ["dbcache@F1B0/0.08", "dbcache@F1B0/0.08", "dbcache@F1B0/0.2"]),
    (28, ["dbcache@F8B0/0.08", "dbcache@F1B0/0.08", "dbcache@F1B0/0.2"]),
])  # fmt: skip
def test_fit_renames_the_adapted_setting_and_says_why(pipe, monkeypatch, blocks, labels):
    import teacli.bench.peers.dbcache

    monkeypatch.setattr(teacli.bench.peers.dbcache, "cached_block_count", lambda pipe: blocks)
    fitted = [DBCACHE.fit(pipe, setting) for setting in DBCACHE.settings(STEPS)]
    assert [setting.label for setting, _ in fitted] == labels
    for (setting, note), asked in zip(fitted, DBCACHE.settings(STEPS)):
        params = setting.params()
        assert params["Fn_compute_blocks"] + params["Bn_compute_blocks"] < blocks
        assert (note is None) == (setting.label == asked.label)
        if note is not None:
            assert note.startswith(f"{asked.label} runs as {setting.label}: ") and f"the {blocks} " in note
        assert DBCACHE.fit(pipe, setting) == (setting, None)  # fitting again changes nothing


def test_block_count_follows_cache_dit_s_adapter_and_falls_back_on_the_block_lists(pipe, tiny_flux_pipe):
    assert cached_block_count(pipe) == 6  # 2 double + 4 single blocks, one list for cache-dit
    assert cached_block_count(tiny_flux_pipe) == 4

    class Plain(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(n))

    class Pipe:  # no adapter in cache-dit: the transformer's own (shortest) list
        def __init__(self, n):
            self.transformer = Plain(n)

    assert cached_block_count(Pipe(2)) == 2 and cached_block_count(Pipe(1)) == 1


def test_a_fitting_bench_measures_a_duplicate_setting_once(pipe, preset, monkeypatch, quiet_teacli, caplog):
    import teacli.bench.peers.dbcache

    monkeypatch.setattr(teacli.bench.peers.dbcache, "cached_block_count", lambda pipe: 2)
    runner = ConfigRunner(pipe, lambda thresh: None, PEERS)
    configs = bench_configs([], DBCACHE.settings(STEPS))
    with caplog.at_level(logging.WARNING, logger="teacli"):
        fitted, dropped = runner.fit(configs, request(preset))
    assert dropped == []
    assert [c.name for c in fitted] == ["vanilla", "teacache@0", "dbcache@F1B0/0.08", "dbcache@F1B0/0.2"]
    assert any("listed already" in record.getMessage() for record in caplog.records)


# --- separate CFG on true-CFG pipelines -------------------------------------------------------------------


def test_dbcache_gets_separate_cfg_on_true_cfg_and_caches_there(pipe, preset, quiet_teacli):
    cfg = request(preset)
    plain = dataclasses.replace(cfg, negative_prompt=None)  # from_preset keeps the preset's "" for None
    assert runs_true_cfg(pipe, cfg) is True and runs_true_cfg(pipe, plain) is False
    with count_transformer_calls(pipe) as counter:
        vanilla = np.asarray(generate(pipe, cfg).output)
    assert counter.total == counter.computed == 2 * STEPS  # cond and uncond: two calls a step

    bold = DBCACHE.settings(STEPS)[-1]  # F1B0/0.2, cache-dit's fast FLUX.1 row
    fitted, note = DBCACHE.fit(pipe, bold, cfg)
    assert note is None and fitted.label == bold.label
    assert fitted.params()["enable_separate_cfg"] == 1
    assert DBCACHE.fit(pipe, bold, plain)[0].params()["enable_separate_cfg"] == 0

    def counted(setting: PeerSetting) -> tuple[int, int]:
        undo = DBCACHE.apply(pipe, setting, STEPS)
        try:
            with count_transformer_calls(pipe) as counter:
                generate(pipe, cfg)
        finally:
            undo()
        return counter.computed, counter.total

    computed, total = counted(fitted)
    assert total == 2 * STEPS and 0 < computed < total  # it caches on the true-CFG pipeline
    # without separate CFG, cache-dit compares cond with uncond and never finds them close: nothing cached
    assert counted(bold) == (2 * STEPS, 2 * STEPS)
    np.testing.assert_array_equal(np.asarray(generate(pipe, cfg).output), vanilla)  # undo restored it


# --- cache-dit's logs and errors --------------------------------------------------------------------------


def test_cache_dit_logs_stay_off_stdout_and_show_on_stderr_only_when_verbose(pipe, preset, capfd, quiet_teacli):
    setting, _ = DBCACHE.fit(pipe, DBCACHE.settings(4)[-1], request(preset, steps=4))
    for level, shown in ((logging.WARNING, False), (logging.DEBUG, True)):
        quiet_teacli.setLevel(level)
        capfd.readouterr()
        undo = DBCACHE.apply(pipe, setting, 4)
        try:
            generate(pipe, request(preset, steps=4))
        finally:
            undo()
        out, err = capfd.readouterr()
        assert "Cache-DiT" not in out
        assert ("Cache-DiT" in err) == shown


def test_a_library_bench_keeps_stdout_clean_and_drops_a_failing_peer_with_one_line(
    pipe, preset, monkeypatch, capfd, quiet_teacli, caplog
):
    from teacli.generation.caching import teacache_configs

    # the bug this file is about: F8 on 6 blocks, unfitted, fails inside cache-dit mid-generation
    monkeypatch.setattr(DBCachePeer, "fit", lambda self, pipe, setting, request=None: (setting, None))
    runner = ConfigRunner(pipe, lambda thresh: teacache_configs(preset, thresh), PEERS)
    configs = bench_configs([], DBCACHE.settings(4))
    with caplog.at_level(logging.WARNING, logger="teacli"):
        result = run_bench(runner, request(preset, steps=4), configs, runs=1, warmup=0)
    assert [row.name for row in result.rows] == ["vanilla", "teacache@0"]
    ((method, reason),) = result.dropped
    assert method == "dbcache" and "\n" not in reason
    assert reason.startswith(
        "cache-dit DBCache (dbcache@F8B0/0.08) failed in its own code: AssertionError: Fn_compute_blocks 8"
    )
    assert result.to_dict()["skipped"] == [{"method": "dbcache", "reason": reason}]
    assert [r.getMessage() for r in caplog.records] == [f"skipping dbcache: {reason}"]
    assert capfd.readouterr().out == ""
    # the failed run's undo left the pipeline uncached
    with count_transformer_calls(pipe) as counter:
        generate(pipe, request(preset, steps=4))
    assert counter.computed == counter.total == 8 and not hasattr(pipe.transformer, "_context_kwargs")


def test_an_error_in_cache_dit_is_one_peer_error_line_and_interrupts_pass(pipe, preset, monkeypatch):
    import cache_dit

    setting = DBCACHE.settings(STEPS)[-1]

    def fails(*args, **kwargs):
        raise RuntimeError("deep inside cache-dit\n" + "x" * 1000)

    monkeypatch.setattr(cache_dit, "enable_cache", fails)
    with pytest.raises(PeerError) as error:
        DBCACHE.apply(pipe, setting, STEPS)
    message = str(error.value)
    assert message.startswith(
        "cache-dit DBCache (dbcache@F1B0/0.2) failed in its own code: RuntimeError: deep inside cache-dit x"
    )
    assert "\n" not in message and len(message) <= 80 + REASON_CHARS and message.endswith("…")
    assert not hasattr(pipe.transformer, "_context_kwargs")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_dit, "enable_cache", interrupted)
    with pytest.raises(KeyboardInterrupt):
        DBCACHE.apply(pipe, setting, STEPS)
