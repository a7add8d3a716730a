"""Regional compilation under TeaCache: the blocks compiled, the decision eager, the outputs unchanged."""

import os
import shutil

import numpy
import pytest
import torch
import torch._dynamo
from support import flux_inputs, make_flux_transformer
from torch._dynamo.utils import counters

import teacli.engine.hook
from teacli import TeaCacheConfig, TeaCacheError, apply_teacache, remove_teacache
from teacli.engine.compile import compile_transformer_blocks, compiled_blocks, uncompile_transformer_blocks
from teacli.generation.caching import teacache_configs
from teacli.generation.counting import count_transformer_calls
from teacli.generation.runner import GenerationRequest, generate
from teacli.models.catalog import builtin_presets
from teacli.models.loading import load_pipeline

FLUX_DEV = [4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01]
TIMESTEPS = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # Every compiled block shares nn.Module._call_impl's code object, and dynamo keeps a few entries per
    # code object: entries left by another test would count here or push these past the limit.
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.fixture
def eager_decisions(monkeypatch):
    """Whether each rel_l1 the hook measured ran eagerly (False: dynamo was tracing it into a graph)."""
    seen = []
    measure = teacli.engine.hook.rel_l1

    def recording(current, previous):
        seen.append(not torch.compiler.is_compiling())
        return measure(current, previous)

    monkeypatch.setattr(teacli.engine.hook, "rel_l1", recording)
    return seen


@torch.no_grad()
def run(model, compile_when=None, **compile_kwargs):
    """Six calls of a bare FLUX transformer under TeaCache; compiled before or after apply_teacache."""
    if compile_when == "before":
        assert compile_transformer_blocks(model, **compile_kwargs) == 4
    handle = apply_teacache(model, TeaCacheConfig(thresh=0.25, coefficients=FLUX_DEV, num_inference_steps=6))
    if compile_when == "after":
        assert compile_transformer_blocks(model, **compile_kwargs) == 4
    outputs = [model(**flux_inputs(0, timestep=t)).sample for t in TIMESTEPS]
    return outputs, [r.decision for r in handle.stats.records]


def assert_compiled_without_breaks():
    assert counters["frames"]["ok"] >= 1  # the blocks were compiled...
    assert counters["frames"]["ok"] == counters["frames"]["total"]
    assert not counters["graph_break"]  # ...as whole graphs: nothing of the hook got inside them


@pytest.mark.parametrize("compile_when, backend", [("before", "eager"), ("after", "aot_eager")])
def test_compiled_blocks_give_the_same_outputs_and_decisions(compile_when, backend, eager_decisions):
    expected, expected_decisions = run(make_flux_transformer())
    model = make_flux_transformer()
    got, decisions = run(model, compile_when, backend=backend)
    assert decisions == expected_decisions and "cached" in decisions and "computed" in decisions
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    assert_compiled_without_breaks()
    assert eager_decisions and all(eager_decisions)
    assert len(compiled_blocks(model)) == 4
    assert compiled_blocks(model) == [*model.transformer_blocks, *model.single_transformer_blocks]


@pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace the builtin")
def test_compiling_the_whole_transformer_would_pull_the_decision_into_dynamo(eager_decisions):
    # The contrast that makes the test above mean something: compiling the hooked forward traces the hook.
    model = make_flux_transformer()
    apply_teacache(model, TeaCacheConfig(thresh=0.25, coefficients=FLUX_DEV, num_inference_steps=6))
    model.compile(backend="eager")
    with torch.no_grad():
        for t in TIMESTEPS[:2]:
            model(**flux_inputs(0, timestep=t))
    assert not all(eager_decisions)


def test_call_counter_sees_compiled_blocks_run_after_they_were_compiled():
    model = make_flux_transformer()
    compile_transformer_blocks(model, backend="eager")
    with torch.no_grad():
        model(**flux_inputs(0))  # compiled and run before the counter adds its probe hooks
    handle = apply_teacache(model, TeaCacheConfig(thresh=0.25, coefficients=FLUX_DEV, num_inference_steps=6))
    with torch.no_grad(), count_transformer_calls(model) as counter:
        for t in TIMESTEPS:
            model(**flux_inputs(0, timestep=t))
    assert (counter.total, counter.computed) == (6, handle.stats.computed)
    assert 0 < handle.stats.cached == counter.cached
    assert not counters["graph_break"]


@torch.no_grad()
def test_a_compiled_pipeline_generates_the_same_image_with_the_same_decisions(teacli_cache):
    preset = builtin_presets()["tiny-flux"]
    request = GenerationRequest.from_preset(preset, "a red circle", steps=8)
    results = []
    for compiled in (False, True):
        pipe = load_pipeline(preset, torch.device("cpu"), torch.float32)  # its own: the session one stays eager
        if compiled:
            assert compile_transformer_blocks(pipe, backend="eager") == 4
        handle = apply_teacache(pipe, teacache_configs(preset))
        image = torch.from_numpy(numpy.array(generate(pipe, request).output))
        results.append((image, [r.decision for r in handle.stats.records]))
    (eager_image, eager_decisions), (compiled_image, compiled_decisions) = results
    assert compiled_decisions == eager_decisions and "cached" in eager_decisions
    assert torch.equal(compiled_image, eager_image)
    assert_compiled_without_breaks()
    remove_teacache(pipe)
    assert uncompile_transformer_blocks(pipe) == 4 and not compiled_blocks(pipe)


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x):
        return x + torch.nn.functional.gelu(self.linear(x))


class _Stack(torch.nn.Module):
    """A transformer without diffusers' _repeated_blocks: its blocks are found in its ModuleLists."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Linear(4, 8)
        self.blocks = torch.nn.ModuleList(_Block() for _ in range(3))
        self.norms = torch.nn.ModuleList([torch.nn.Identity()])  # no parameters: not a block

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return x


@torch.no_grad()
def test_a_model_without_repeated_blocks_gets_its_block_lists_compiled():
    model = _Stack()
    x = torch.randn(2, 4)
    expected = model(x)
    assert compile_transformer_blocks(model, backend="eager") == 3
    assert compiled_blocks(model) == list(model.blocks)
    assert torch.equal(model(x), expected)
    assert counters["frames"]["ok"] >= 1


def test_a_model_without_blocks_is_refused():
    with pytest.raises(TeaCacheError, match=r"transformer \(Linear\) has no list of transformer blocks to compile"):
        compile_transformer_blocks(torch.nn.Linear(2, 2))


@pytest.mark.skipif(
    os.environ.get("TEACLI_SLOW") != "1" or shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="inductor builds C++ (about 1 min on 2 CPU cores): set TEACLI_SLOW=1, needs a C++ compiler",
)
def test_inductor_compiled_blocks_match_eager(eager_decisions):
    expected, expected_decisions = run(make_flux_transformer())
    got, decisions = run(make_flux_transformer(), "after")
    assert decisions == expected_decisions
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert_compiled_without_breaks()
    assert all(eager_decisions)
