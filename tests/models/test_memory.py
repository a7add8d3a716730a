"""Offloading and quantization (teacli.models.memory): what each option takes and refuses, the quantization config
diffusers is given, and a real load of a tiny pipeline quantized or offloaded with TeaCache on top.

Offloading on CPU moves nothing, so where the run goes through teacli's own path the CPU is let in as an offload
device (OFFLOAD_DEVICE_TYPES), and the hooks' order and the outputs are what is checked."""

from __future__ import annotations

import pytest
import torch
from diffusers import QuantoConfig, TorchAoConfig

import teacli.models.memory as memory
from teacli.engine.diffusers_internals import hook_order, hook_registry
from teacli.engine.hook import TEACACHE_HOOK
from teacli.generation.caching import teacache_configs
from teacli.generation.generate import GenerationSpec, generate
from teacli.generation.media import read_metadata
from teacli.generation.preparation import LoadOptions, OptionsError, load_options
from teacli.generation.session import open_session, resolve
from teacli.models.memory import MemoryOptionError, check_on_device, quantization_config

CPU = torch.device("cpu")


class FakeCuda:
    """A CUDA device as the checks see it (only its type is read), on a machine without one."""

    type = "cuda"


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        (dict(offload="disk"), "offload", "offload takes model, sequential, group, got 'disk'"),
        (dict(quantize="int3"), "quantize", "quantize takes bnb-nf4, .*, got 'int3'"),
        (dict(offload="sequential", quantize="quanto-int8"), None, None),  # allowed together
    ],
)
def test_options_name_what_they_take(options, field, message):
    if message is None:
        loaded = LoadOptions(**options)
        assert memory.memory_description(loaded.offload, loaded.quantize) == (
            "denoisers quantized: optimum-quanto int8 weights, sequential offload"
        )
        return
    with pytest.raises(MemoryOptionError, match=message) as refused:
        LoadOptions(**options)
    assert refused.value.field == field


def test_a_backend_that_is_not_installed_says_which_extra_installs_it(monkeypatch):
    monkeypatch.setattr(memory, "_installed", lambda module: module != "optimum.quanto")
    with pytest.raises(
        MemoryOptionError, match=r"quanto-int4 needs optimum-quanto, .* pip install 'teacli\[quantize\]'"
    ):
        load_options(quantize="quanto-int4")
    monkeypatch.setattr(memory, "_installed", lambda module: False)
    with pytest.raises(MemoryOptionError, match=r"pip install 'teacli\[bnb\]'"):
        load_options(quantize="bnb-nf4")


def test_bitsandbytes_weights_are_never_offloaded_layer_by_layer(monkeypatch):
    monkeypatch.setattr(memory, "_installed", lambda module: True)
    with pytest.raises(OptionsError, match="cannot be offloaded layer by layer; use offload model or group"):
        LoadOptions(offload="sequential", quantize="bnb-int8")
    assert LoadOptions(offload="group", quantize="bnb-int8").quantize == "bnb-int8"


def test_the_device_must_be_able_to_do_it(monkeypatch):
    with pytest.raises(
        MemoryOptionError, match="offload group moves weights between the CPU and a GPU; this run is on cpu"
    ):
        check_on_device("group", None, CPU)
    with pytest.raises(
        MemoryOptionError, match="bnb-nf4 runs on CUDA GPUs only; this run is on cpu: use one of torchao-int8"
    ):
        check_on_device(None, "bnb-nf4", CPU)
    check_on_device("model", "bnb-nf4", FakeCuda())  # a GPU can
    check_on_device(None, "quanto-int8", CPU)  # quanto and torchao's int8 run anywhere
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (8, 0))  # an A100
    with pytest.raises(MemoryOptionError, match="compute capability 8.9 or newer .* this one is 8.0"):
        check_on_device(None, "torchao-float8", FakeCuda())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))  # an H100
    check_on_device(None, "torchao-float8", FakeCuda())


def test_the_quantization_config_quantizes_the_denoisers_only():
    config = quantization_config("quanto-int8", ["transformer", "transformer_2"], torch.bfloat16)
    assert set(config.quant_mapping) == {"transformer", "transformer_2"}
    assert isinstance(config.quant_mapping["transformer"], QuantoConfig)
    assert config.quant_mapping["transformer"].weights_dtype == "int8"
    torchao = quantization_config("torchao-int8dq", ["transformer"], torch.bfloat16).quant_mapping["transformer"]
    assert isinstance(torchao, TorchAoConfig)
    assert type(torchao.quant_type).__name__ == "Int8DynamicActivationInt8WeightConfig"


def test_every_quantization_builds_its_config_or_says_what_is_missing():
    for name in memory.QUANTIZATIONS:
        if memory.QUANTIZATIONS[name].backend == "bitsandbytes":
            continue  # diffusers' BitsAndBytesConfig needs the package; CI has no CUDA to run it on
        quantization_config(name, ["transformer"], torch.bfloat16)


@pytest.mark.parametrize("quantize", ["quanto-int8", "torchao-int8"])
def test_a_quantized_pipeline_generates_with_teacache_and_records_it(teacli_cache, tmp_path, quantize):
    out = tmp_path / "q.png"
    spec = GenerationSpec(
        prompt="a red circle", model="tiny-flux", device="cpu", out=out, steps=6, compare_baseline=True,
        load=load_options(quantize=quantize),
    )  # fmt: skip
    summary = generate(spec)
    assert summary.settings["quantize"] == quantize
    assert summary.stats.totals.calls == 6 and summary.stats.totals.cached > 0
    assert summary.psnr > 30  # the cache against the same quantized pipeline uncached
    metadata = read_metadata(out)
    assert metadata["load"]["quantize"] == quantize


def test_both_experts_of_a_two_expert_pipeline_are_quantized(teacli_cache):
    session = open_session(resolve("tiny-wan22"), device="cpu", load=LoadOptions(quantize="quanto-int8"))
    for name in ("transformer", "transformer_2"):
        linears = [type(m).__name__ for m in getattr(session.pipe, name).modules() if "Linear" in type(m).__name__]
        assert linears and set(linears) == {"QLinear"}, name
    assert type(session.pipe.text_encoder).__name__ == "UMT5EncoderModel"  # the rest as it was
    assert not any(type(m).__name__ == "QLinear" for m in session.pipe.text_encoder.modules())


@pytest.mark.parametrize("offload", ["model", "group"])
def test_teacli_offloads_then_teacache_goes_beneath_with_the_same_picture(teacli_cache, monkeypatch, offload):
    monkeypatch.setattr(memory, "OFFLOAD_DEVICE_TYPES", ("cpu",))  # let the CPU offload to itself
    plain = open_session(resolve("tiny-flux"), device="cpu")
    offloaded = open_session(resolve("tiny-flux"), device="cpu", load=LoadOptions(offload=offload))
    if offload == "group":
        assert hook_order(hook_registry(offloaded.pipe.transformer)) == ["group_offloading"]
    else:
        assert hasattr(offloaded.pipe.transformer, "_hf_hook")
    images = []
    for session in (plain, offloaded):
        from teacli.engine.apply import apply_teacache

        with apply_teacache(session.pipe, teacache_configs(session.preset, 0.3)) as handle:
            if offload == "group" and session is offloaded:
                assert hook_order(hook_registry(session.pipe.transformer)) == [TEACACHE_HOOK, "group_offloading"]
            generator = torch.Generator().manual_seed(0)
            images.append(session.pipe("a red circle", num_inference_steps=6, height=64, width=64,
                                       generator=generator, output_type="pt").images)  # fmt: skip
            decisions = [record.decision for record in handle.stats.records]
        images.append(decisions)
    assert images[1] == images[3]  # the same decisions
    torch.testing.assert_close(images[2], images[0], rtol=1e-5, atol=1e-5)  # model offload: cpu:0 vs cpu kernels
    if offload == "group":
        assert hook_order(hook_registry(offloaded.pipe.transformer)) == ["group_offloading"]  # TeaCache came off


def test_a_lora_on_quanto_weights_is_refused_and_torchao_takes_one(teacli_cache, tmp_path):
    from support import lora_state_dict, save_lora

    save_lora(tmp_path, lora_state_dict())
    with pytest.raises(OptionsError, match="a LoRA cannot go on optimum-quanto weights") as refused:
        load_options(lora=str(tmp_path), quantize="quanto-int8")
    assert refused.value.fields == ("lora", "quantize")
    spec = GenerationSpec(
        prompt="a red circle", model="tiny-flux", device="cpu", steps=4, out=tmp_path / "l.png",
        load=load_options(lora=str(tmp_path), quantize="torchao-int8"),
    )  # fmt: skip
    assert generate(spec).stats.totals.calls == 4


def test_cache_device_still_works_beside_offloading(teacli_cache, monkeypatch, tmp_path):
    from teacli.generation.preparation import CacheOptions

    monkeypatch.setattr(memory, "OFFLOAD_DEVICE_TYPES", ("cpu",))
    spec = GenerationSpec(
        prompt="a red circle", model="tiny-flux", device="cpu", steps=6, out=tmp_path / "o.png",
        load=load_options(offload="group", quantize="torchao-int8"), cache=CacheOptions(cache_device="cpu"),
    )  # fmt: skip
    summary = generate(spec)
    assert summary.stats.totals.cached > 0 and summary.stats.residual_device == "cpu"
    assert summary.settings["offload"] == "group" and summary.settings["cache_device"] == "cpu"


def test_none_is_not_quantized_from_the_api_too():
    assert LoadOptions(quantize="none").quantize is None
    assert load_options(quantize="none") == LoadOptions()
