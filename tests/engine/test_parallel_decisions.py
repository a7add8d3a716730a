"""Decisions under parallelism: identical on every rank of one generation (context parallelism), and per
CFG branch when the branches run on different ranks. The multi-rank tests run two CPU processes on gloo
(tests/engine/parallel_worker.py); the rest check the single-process path and the hook order in this one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers.hooks import HookRegistry, ModelHook
from toy import ToyTransformer, modulated_sequence

from teacli import TeaCacheConfig, TeaCacheError, apply_teacache, remove_teacache
from teacli.engine.decision import rel_l1, rel_l1_from_terms, rel_l1_terms

WORKER = Path(__file__).with_name("parallel_worker.py")
IDENTITY = [1.0, 0.0]


def assert_close_or_none(actual: list, expected: list, rel: float) -> None:
    """rel_l1 per call, None where nothing was measured (a branch's first call); pytest 9.2's approx refuses None."""
    assert [value is None for value in actual] == [value is None for value in expected]
    pairs = [(a, e) for a, e in zip(actual, expected) if e is not None]
    assert [a for a, _ in pairs] == pytest.approx([e for _, e in pairs], rel=rel)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Both ranks' results from one two-process run of every scenario."""
    out = tmp_path_factory.mktemp("parallel")
    init = f"file://{out / 'rendezvous'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), "2", init, str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=240)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank} failed:\n{logs[rank][-4000:]}"
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


# --- the synced rel_l1 and the single-process path ---------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_summed_terms_on_one_rank_equal_rel_l1(dtype):
    generator = torch.Generator().manual_seed(0)
    previous = torch.randn(2, 64, 24, generator=generator).to(dtype)
    current = (previous.float() + 0.1 * torch.randn(2, 64, 24, generator=generator)).to(dtype)
    assert rel_l1_from_terms(*rel_l1_terms(current, previous).tolist()) == pytest.approx(
        rel_l1(current, previous), rel=1e-6
    )


def test_summed_terms_of_shards_equal_rel_l1_of_the_whole_even_when_uneven():
    generator = torch.Generator().manual_seed(1)
    previous = torch.randn(1, 10, 8, generator=generator)
    current = previous * torch.linspace(0.5, 1.5, 10).reshape(1, 10, 1)  # tokens move by different amounts
    shards = [slice(0, 3), slice(3, 10)]  # ring_anything/ulysses_anything may split unevenly
    summed = sum(rel_l1_terms(current[:, part], previous[:, part]) for part in shards)
    assert rel_l1_from_terms(*summed.tolist()) == pytest.approx(rel_l1(current, previous), rel=1e-6)
    halves = [rel_l1(current[:, part], previous[:, part]) for part in shards]
    assert max(halves) - min(halves) > 0.1  # each shard alone would measure something else


def run_toy(config: TeaCacheConfig, distances: list[float]):
    model = ToyTransformer()
    handle = apply_teacache(model, config)
    image, text = torch.ones(1, 4, 1), torch.ones(1, 2, 1)
    values = modulated_sequence(distances)
    for step, value in enumerate(values):
        model(image, text, value, timestep=1000.0 - step)
    return handle, values


def test_single_process_takes_no_collective_and_measures_plain_rel_l1(monkeypatch):
    def no_collective(*args, **kwargs):
        raise AssertionError("a single process must not call a collective")

    monkeypatch.setattr(torch.distributed, "all_reduce", no_collective)
    assert TeaCacheConfig(coefficients=IDENTITY).sync_decisions == "auto"
    for sync in ("auto", False):
        config = TeaCacheConfig(thresh=0.1, coefficients=IDENTITY, num_inference_steps=8, sync_decisions=sync)
        handle, values = run_toy(config, [0.03, 0.05, 0.02, 0.07, 0.04, 0.03, 0.05])
        measured = [record.rel_l1 for record in handle.stats.records]
        assert measured == [None] + [rel_l1(cur, prev) for prev, cur in zip(values, values[1:])]  # bit for bit


def test_sync_on_without_a_process_group_says_how_to_launch():
    if torch.distributed.is_initialized():
        pytest.skip("another test left a process group in this process")
    config = TeaCacheConfig(coefficients=IDENTITY, num_inference_steps=4, sync_decisions=True)
    with pytest.raises(TeaCacheError, match="torchrun"):
        run_toy(config, [0.1, 0.1, 0.1])


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_sync_decisions_is_auto_true_or_false(value):
    with pytest.raises(TeaCacheError, match="sync_decisions must be 'auto', True or False"):
        TeaCacheConfig(coefficients=IDENTITY, sync_decisions=value)


# --- hook order: TeaCache runs inside diffusers' context-parallel input split ------------------------


class FirstHalf(ModelHook):
    """Stands in for diffusers' ContextParallelSplitHook: hands the forward the first half of the tokens."""

    def pre_forward(self, module, image, text, modulated, timestep=None):
        return (image[:, : image.shape[1] // 2], text, modulated[: modulated.numel() // 2]), {"timestep": timestep}


@pytest.mark.parametrize("order", ["teacache_first", "split_first"])
def test_teacache_runs_inside_the_context_parallel_split_whatever_the_order(order):
    model = ToyTransformer()
    config = TeaCacheConfig(thresh=0.5, coefficients=IDENTITY, num_inference_steps=4)
    if order == "teacache_first":
        handle = apply_teacache(model, config)
    HookRegistry.check_if_exists_or_initialize(model).register_hook(FirstHalf(), "cp_input---")
    if order == "split_first":
        handle = apply_teacache(model, config)
    assert model._diffusers_hook._hook_order == ["teacli_teacache", "cp_input---"]  # the last one runs first

    image = torch.arange(8.0).reshape(1, 8, 1)
    outputs = [model(image, torch.ones(1, 2, 1), torch.full((8,), 1.0 + step / 100))[0] for step in range(4)]
    assert [str(r.decision) for r in handle.stats.records] == ["forced", "cached", "cached", "forced"]
    for output in outputs:  # the cached calls too: TeaCache saw (and cached) the shard, not the whole sequence
        torch.testing.assert_close(output, image[:, :4] * 2 + 1.5)

    remove_teacache(model)
    assert model._diffusers_hook._hook_order == ["cp_input---"]
    torch.testing.assert_close(model(image, torch.ones(1, 2, 1), torch.ones(8))[0], image[:, :4] * 2 + 1.5)


def test_hooks_added_after_context_parallelism_are_not_moved():
    model = ToyTransformer()
    registry = HookRegistry.check_if_exists_or_initialize(model)
    registry.register_hook(FirstHalf(), "cp_input---")
    registry.register_hook(ModelHook(), "someone_else")
    with pytest.raises(TeaCacheError, match=r"hooks \['someone_else'\] added after context parallelism"):
        apply_teacache(model, TeaCacheConfig(coefficients=IDENTITY))
    assert registry._hook_order == ["cp_input---", "someone_else"]


# --- two processes ---------------------------------------------------------------------------------


def test_shards_take_identical_decisions_measured_on_the_whole_tensor(ranks):
    synced = [rank["toy_shards"]["synced"] for rank in ranks]
    whole = ranks[0]["toy_shards"]
    assert synced[0]["decisions"] == synced[1]["decisions"] == whole["whole"]["decisions"]
    assert {"cached", "computed"} <= set(synced[0]["decisions"])
    for rank in synced:
        assert_close_or_none(rank["rel_l1"], whole["whole_rel_l1"], rel=1e-6)
    # Each rank's outputs are its shard of the single-process outputs: per-shard residuals stay correct.
    for index, rank in enumerate(synced):
        for shard, full in zip(rank["outputs"], whole["whole"]["outputs"]):
            assert shard == pytest.approx(full[index * 4 : (index + 1) * 4])


def test_without_sync_the_same_shards_decide_differently(ranks):
    alone = [rank["toy_shards"]["alone"]["decisions"] for rank in ranks]
    assert alone[0] != alone[1]  # so the sync is what aligns them above


def test_cfg_parallel_each_rank_holds_its_branch_and_decides_as_one_process(ranks):
    for rank in ranks:
        result = rank["cfg_parallel"]
        branch, auto = result["branch"], result["auto"]
        assert auto["branches"] == [branch]
        assert auto["decisions"] == result["reference"][branch]
        assert {"cached", "computed"} <= set(auto["decisions"])
        assert auto["output_diff"] == 0.0
    assert [rank["cfg_parallel"]["branch"] for rank in ranks] == ["cond", "uncond"]
    # 'auto' did not sync (no context-parallel group): each rank measured its own branch.
    assert ranks[0]["cfg_parallel"]["auto"]["rel_l1"] != ranks[1]["cfg_parallel"]["auto"]["rel_l1"]


def test_cfg_parallel_with_sync_forced_on_couples_the_branches(ranks):
    coupled = [rank["cfg_parallel"]["True"] for rank in ranks]
    assert coupled[0]["rel_l1"] == coupled[1]["rel_l1"]  # one distance over both branches' inputs
    for rank, result in zip(ranks, coupled):
        assert result["rel_l1"] != rank["cfg_parallel"]["auto"]["rel_l1"]


# On the transformer itself, innermost first: FLUX.1 and Wan split inputs there (Wan its per-token
# timestep), Qwen-Image only inside (its first block), so it has no split hook at the top.
ROOT_HOOKS = {
    "flux": ["teacli_teacache", "cp_input---"],
    "wan": ["teacli_teacache", "cp_input---"],
    "qwen": ["teacli_teacache"],
}


@pytest.mark.parametrize("order", ["teacache_first", "parallel_first"])
@pytest.mark.parametrize("model", ["flux", "wan", "qwen"])
def test_diffusers_context_parallelism_decides_and_outputs_as_one_process(ranks, model, order):
    reference = ranks[0]["context_parallel"][model]["reference"]
    assert {"cached", "computed"} <= set(reference["decisions"])
    for rank in ranks:
        result = rank["context_parallel"][model][order]
        assert result["hooks"] == ROOT_HOOKS[model]
        assert result["decisions"] == reference["decisions"]
        assert_close_or_none(result["rel_l1"], reference["rel_l1"], rel=1e-5)
        assert result["output_diff"] < 1e-5
        assert result["warnings"] == []


@pytest.mark.parametrize("model", ["wan", "qwen"])
def test_unsynced_context_parallelism_warns_once(ranks, model):
    """These plans cut the sequence inside the blocks, so the modulated input is whole on every rank and
    the decisions agree even unsynced; the warning is still given, as on models whose input is cut."""
    reference = ranks[0]["context_parallel"][model]["reference"]
    for rank in ranks:
        result = rank["context_parallel"][model]["unsynced"]
        assert result["decisions"] == reference["decisions"]
        assert len(result["warnings"]) == 1
        assert "sync_decisions=False" in result["warnings"][0]
