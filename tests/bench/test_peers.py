"""The peer caches on the embedded tiny-flux pipeline: counting, apply and undo, calibration, availability."""

import math
import types

import numpy as np
import pytest
import torch

from teacli import TeaCacheConfig, apply_teacache
from teacli.bench.peers import (
    INSTALL_PEERS,
    PEERS,
    PeerError,
    PeerSetting,
    UnknownPeerError,
    count_transformer_calls,
    parse_against,
)
from teacli.generation.runner import GenerationRequest, generate
from teacli.models.catalog import builtin_presets

STEPS = 8
DIFFUSERS_PEERS = ("fbcache", "magcache", "taylorseer")


def request(**overrides) -> GenerationRequest:
    return GenerationRequest.from_preset(
        builtin_presets()["tiny-flux"], "a red fox in the snow", steps=STEPS, **overrides
    )


def pixels(pipe, req=None) -> np.ndarray:
    return np.asarray(generate(pipe, req or request()).output)


def attributes(pipe) -> dict[str, set[str]]:
    """Every module's own attribute names: what "exactly as before" compares."""
    return {name: set(vars(module)) for name, module in pipe.transformer.named_modules()}


def hooks_left(pipe) -> dict[str, list[str]]:
    return {
        name: list(registry.hooks)
        for name, module in pipe.transformer.named_modules()
        if (registry := vars(module).get("_diffusers_hook")) is not None and registry.hooks
    }


def settings_to_run(method: str) -> list[PeerSetting]:
    settings = PEERS[method].settings(STEPS)
    if method == "fbcache":
        # tiny-flux's random first block moves its residual by 0.23-0.36 a step at 8 steps, above every
        # threshold FBCache documents for FLUX (0.08-0.2), so those never cache here; 0.5 shows the mechanism.
        settings.append(PeerSetting("fbcache", "threshold=0.5", "fbcache@0.5"))
    return settings


@pytest.fixture(scope="module")
def vanilla(tiny_flux_pipe):
    with count_transformer_calls(tiny_flux_pipe) as counter:
        image = pixels(tiny_flux_pipe)
    return image, counter


def test_vanilla_computes_every_call_and_times_them(tiny_flux_pipe, vanilla):
    _, counter = vanilla
    assert counter.total == counter.computed == STEPS
    assert counter.cached == 0
    # the probes are the Linear leaves of the last single-stream block, the last block FLUX runs
    probes = counter.probes["transformer"]
    assert probes and all(name.startswith("single_transformer_blocks.1.") for name in probes)
    assert "single_transformer_blocks.1.attn.to_q" in probes
    assert counter.seconds > 0
    assert math.isclose(counter.per_call_seconds, counter.seconds / STEPS)
    # the counter's hooks are gone afterwards
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_flux_pipe.transformer.modules())


def test_counter_agrees_with_the_teacache_hook(tiny_flux_pipe):
    preset = builtin_presets()["tiny-flux"]
    config = TeaCacheConfig(thresh=0.6, coefficients=preset.coefficients)
    with apply_teacache(tiny_flux_pipe, config) as handle, count_transformer_calls(tiny_flux_pipe) as counter:
        generate(tiny_flux_pipe, request())
    assert counter.total == len(handle.stats.records) == STEPS
    assert counter.computed == handle.stats.computed
    assert counter.computed < counter.total  # the threshold did cache some calls


def test_counter_counts_both_cfg_branches(tiny_flux_pipe):
    with count_transformer_calls(tiny_flux_pipe) as counter:
        generate(tiny_flux_pipe, request(negative_prompt="blurry", true_cfg=4.0))
    assert counter.total == counter.computed == 2 * STEPS


@pytest.mark.parametrize("method", DIFFUSERS_PEERS)
def test_settings_cache_more_as_they_get_bolder_and_undo_restores_the_pipeline(tiny_flux_pipe, vanilla, method):
    vanilla_image, _ = vanilla
    peer = PEERS[method]
    assert peer.unavailable(tiny_flux_pipe) is None
    documented = peer.settings(STEPS)
    assert 2 <= len(documented) <= 3
    assert len({s.label for s in documented}) == len(documented)
    assert all(s.method == method and s.label.startswith(f"{method}@") for s in documented)
    peer.prepare(tiny_flux_pipe, lambda: generate(tiny_flux_pipe, request()), STEPS)
    before = attributes(tiny_flux_pipe)

    computed = []
    for setting in settings_to_run(method):
        undo = peer.apply(tiny_flux_pipe, setting, STEPS)
        assert tiny_flux_pipe.transformer.is_cache_enabled
        with count_transformer_calls(tiny_flux_pipe) as counter:
            image = pixels(tiny_flux_pipe)
        undo()
        assert counter.total == STEPS
        computed.append(counter.computed)
        # exactly as before: no cache enabled, no hook, not one attribute more or less on any module
        assert not tiny_flux_pipe.transformer.is_cache_enabled
        assert hooks_left(tiny_flux_pipe) == {}
        assert attributes(tiny_flux_pipe) == before

    # conservative to aggressive: never more computed calls as the setting gets bolder
    assert computed == sorted(computed, reverse=True)
    # the boldest skipped or predicted something, and that shows in the image
    assert 0 < computed[-1] < STEPS
    assert not np.array_equal(image, vanilla_image)
    np.testing.assert_array_equal(pixels(tiny_flux_pipe), vanilla_image)


def test_magcache_calibrates_one_ratio_per_step_on_this_model(tiny_flux_pipe, capsys):
    peer = PEERS["magcache"]
    peer.prepare(tiny_flux_pipe, lambda: generate(tiny_flux_pipe, request()), STEPS)
    ratios = peer.calibrated_ratios(tiny_flux_pipe, STEPS)["transformer"]
    assert len(ratios) == STEPS
    assert ratios[0] == 1.0  # the first step has no previous residual
    assert all(math.isfinite(r) and r > 0 for r in ratios)
    assert len(set(ratios[1:])) > 1  # measured here, not a constant
    assert "[MagCache]" not in capsys.readouterr().out  # calibrate mode's print is kept off the bench's stdout
    assert not tiny_flux_pipe.transformer.is_cache_enabled and hooks_left(tiny_flux_pipe) == {}

    # every setting runs on those ratios
    undo = peer.apply(tiny_flux_pipe, peer.settings(STEPS)[0], STEPS)
    config = tiny_flux_pipe.transformer._cache_config
    undo()
    assert config.num_inference_steps == STEPS and not config.calibrate
    np.testing.assert_allclose(config.mag_ratios.tolist(), ratios)

    # no ratios calibrated for another step count
    assert peer.calibrated_ratios(tiny_flux_pipe, STEPS + 1) is None
    with pytest.raises(PeerError, match="call prepare"):
        peer.apply(tiny_flux_pipe, peer.settings(STEPS + 1)[0], STEPS + 1)
    assert not tiny_flux_pipe.transformer.is_cache_enabled


def test_magcache_calibration_averages_the_cfg_branches(tiny_flux_pipe):
    peer = PEERS["magcache"]
    cfg = request(negative_prompt="blurry", true_cfg=4.0)
    peer.prepare(tiny_flux_pipe, lambda: generate(tiny_flux_pipe, cfg), STEPS)
    ratios = peer.calibrated_ratios(tiny_flux_pipe, STEPS)["transformer"]
    assert len(ratios) == STEPS and ratios[0] == 1.0


def test_dbcache_says_how_to_install_cache_dit(tiny_flux_pipe):
    import importlib.util

    if importlib.util.find_spec("cache_dit") is not None:
        pytest.skip("cache-dit is installed here")
    assert PEERS["dbcache"].unavailable(tiny_flux_pipe) == f"cache-dit is not installed: {INSTALL_PEERS}"
    assert INSTALL_PEERS == "pip install 'teacli[peers]'"
    with pytest.raises(PeerError, match="cache-dit is not installed"):
        PEERS["dbcache"].apply(tiny_flux_pipe, PEERS["dbcache"].settings(28)[0], 28)


def test_dbcache_refuses_a_cache_dit_before_1_1(tiny_flux_pipe, monkeypatch):
    import importlib.metadata
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    for old in ("0.3.3", "1.0.0"):
        monkeypatch.setattr(importlib.metadata, "version", lambda name, old=old: old)
        reason = PEERS["dbcache"].unavailable(tiny_flux_pipe)
        assert reason.startswith(f"cache-dit {old} is older than the 1.1 API") and "cache-dit>=1.1,<2" in reason


def test_dbcache_settings_follow_cache_dit_flux_rows():
    settings = PEERS["dbcache"].settings(28)
    assert [s.label for s in settings] == ["dbcache@F8B0/0.08", "dbcache@F1B0/0.08", "dbcache@F1B0/0.2"]
    assert settings[0].params() == {
        "Fn_compute_blocks": 8,
        "Bn_compute_blocks": 0,
        "residual_diff_threshold": 0.08,
        "max_warmup_steps": 8,
    }
    assert PEERS["dbcache"].settings(8)[0].params()["max_warmup_steps"] == 2


def test_a_config_missing_from_diffusers_is_named(tiny_flux_pipe, monkeypatch):
    import diffusers
    import diffusers.hooks

    monkeypatch.delattr(diffusers.hooks, "TaylorSeerCacheConfig")
    assert PEERS["taylorseer"].unavailable(tiny_flux_pipe) == (
        f"TaylorSeerCacheConfig is not in diffusers {diffusers.__version__}: upgrade diffusers to run taylorseer"
    )
    assert PEERS["fbcache"].unavailable(tiny_flux_pipe) is None


def test_a_transformer_without_cache_mixin_is_named():
    pipe = types.SimpleNamespace(transformer=torch.nn.Sequential(torch.nn.Linear(2, 2)))
    for method in DIFFUSERS_PEERS:
        reason = PEERS[method].unavailable(pipe)
        assert reason is not None and "CacheMixin" in reason and "transformer (Sequential)" in reason


def test_parse_against():
    assert list(PEERS) == ["fbcache", "magcache", "taylorseer", "dbcache"]
    assert parse_against(None) == list(PEERS)
    assert parse_against("all") == list(PEERS)
    assert parse_against(" MagCache , fbcache,fbcache ") == ["fbcache", "magcache"]
    assert parse_against("none") == [] and parse_against("") == []
    with pytest.raises(UnknownPeerError) as error:
        parse_against("fbcache,teacache,easycache")
    message = str(error.value)
    assert isinstance(error.value, ValueError) and "\n" not in message
    assert "'teacache', 'easycache'" in message
    assert "fbcache, magcache, taylorseer, dbcache" in message


def test_setting_params_round_trip_and_bad_settings():
    setting = PEERS["taylorseer"].settings(STEPS)[1]
    assert setting.params() == {"cache_interval": 5, "max_order": 1, "disable_cache_before_step": 3}
    with pytest.raises(PeerError, match="name=value"):
        PeerSetting("fbcache", "0.05", "fbcache@0.05").params()
    with pytest.raises(PeerError, match="not fbcache"):
        PEERS["fbcache"].apply(None, setting, STEPS)


def test_a_transformer_without_block_lists_is_timed_and_counted_as_computed():
    import torch

    from teacli.bench.peers import count_transformer_calls

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.proj(x)

    model = Plain()
    with count_transformer_calls(model) as counter:
        for _ in range(3):
            model(torch.ones(1, 4))
    assert counter.total == counter.computed == 3 and counter.seconds > 0
