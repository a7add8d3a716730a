import math

import pytest
import torch
from toy import IDENTITY, BareToyTransformer, ToyTransformer, drive, extract_toy, modulated_sequence, pattern

from teacli import (
    CacheContext,
    ExtractorContractError,
    TeaCacheConfig,
    TeaCacheError,
    UnknownTransformerError,
    apply_teacache,
    get_extractor,
    remove_teacache,
)
from teacli.engine.state import DEFAULT_BRANCH


@torch.no_grad()
def test_first_and_last_steps_forced_middle_follows_the_rule():
    model = BareToyTransformer()
    handle = apply_teacache(model, TeaCacheConfig(thresh=0.25, coefficients=IDENTITY, num_inference_steps=7))
    drive(model, [0.1] * 6)
    assert pattern(handle.stats.records) == "F..C..F"
    assert [r.step for r in handle.stats.records] == list(range(7))
    assert model.block_runs == 3
    assert handle.stats.totals.cached == 4 and handle.stats.computed == 3


@torch.no_grad()
def test_cached_call_returns_exactly_input_plus_cached_residual_for_each_stream():
    model = BareToyTransformer()
    apply_teacache(model, TeaCacheConfig(thresh=0.25, coefficients=IDENTITY))
    (image0, text0, (out_image0, out_text0)), (image1, text1, (out_image1, out_text1)) = drive(model, [0.1])
    assert model.block_runs == 1
    assert torch.equal(out_image1, image1 + (out_image0 - image0))
    assert torch.equal(out_text1, text1 + (out_text0 - text0))


@torch.no_grad()
def test_threshold_zero_runs_every_call_and_matches_the_unhooked_model():
    reference = BareToyTransformer()
    model = BareToyTransformer()
    expected = [out for *_, out in drive(reference, [1e-6] * 5)]
    apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=[-3.0, 0.0]))
    got = [out for *_, out in drive(model, [1e-6] * 5)]
    assert model.block_runs == 6
    for (a_image, a_text), (b_image, b_text) in zip(expected, got):
        assert torch.equal(a_image, b_image) and torch.equal(a_text, b_text)


@torch.no_grad()
def test_ret_steps_forces_the_first_steps():
    model = BareToyTransformer()
    handle = apply_teacache(model, TeaCacheConfig(thresh=10.0, coefficients=IDENTITY, ret_steps=3))
    drive(model, [0.01] * 5)
    assert pattern(handle.stats.records) == "FFF..."


@torch.no_grad()
def test_each_cache_context_keeps_its_own_state_and_residual():
    model = ToyTransformer()
    handle = apply_teacache(model, TeaCacheConfig(thresh=0.25, coefficients=IDENTITY))
    cond = modulated_sequence([0.1] * 3)
    uncond = modulated_sequence([0.5] * 3)
    images = {"cond": torch.ones(2, 3), "uncond": -torch.ones(2, 3)}
    outputs = {"cond": [], "uncond": []}
    for step in range(4):
        for branch, sequence in (("cond", cond), ("uncond", uncond)):
            with model.cache_context(branch):
                outputs[branch].append(model(images[branch] * (step + 1), torch.zeros(5), sequence[step]))
    by_branch = {b: pattern([r for r in handle.stats.records if r.branch == b]) for b in ("cond", "uncond")}
    assert by_branch == {"cond": "F..C", "uncond": "FCCC"}
    # cond's cached step 1 adds cond's residual from step 0, never uncond's.
    residual = outputs["cond"][0][0] - images["cond"]
    assert torch.equal(outputs["cond"][1][0], images["cond"] * 2 + residual)
    totals = handle.stats.by_branch()
    assert totals[("transformer", "cond")].cached == 2 and totals[("transformer", "uncond")].cached == 0


@torch.no_grad()
def test_transformer_without_cache_context_uses_the_default_state():
    model = BareToyTransformer()
    assert not hasattr(model, "cache_context")
    handle = apply_teacache(model, TeaCacheConfig(thresh=0.25, coefficients=IDENTITY))
    drive(model, [0.1, 0.1])
    assert {r.branch for r in handle.stats.records} == {DEFAULT_BRANCH}


@torch.no_grad()
def test_state_resets_when_a_new_generation_starts():
    model = BareToyTransformer()
    handle = apply_teacache(model, TeaCacheConfig(thresh=0.25, coefficients=IDENTITY))
    timesteps = [1.0, 0.8, 0.6]
    first = drive(model, [0.1, 0.1], timesteps=timesteps)
    second = drive(model, [0.1, 0.1], timesteps=timesteps)  # the timestep going back up starts a new one
    assert pattern(handle.stats.records) == "F..F.."
    assert [r.generation for r in handle.stats.records] == [0, 0, 0, 1, 1, 1]
    for (_, _, a), (_, _, b) in zip(first, second):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@torch.no_grad()
def test_handle_reset_forgets_states_and_records():
    model = BareToyTransformer()
    handle = apply_teacache(model, TeaCacheConfig(thresh=0.25, coefficients=IDENTITY))
    drive(model, [0.1])
    handle.reset()
    assert len(handle.stats) == 0
    drive(model, [0.1])
    assert pattern(handle.stats.records) == "F."


@torch.no_grad()
def test_remove_restores_the_original_forward():
    model = BareToyTransformer()
    reference = drive(BareToyTransformer(), [0.1] * 3)
    handle = apply_teacache(model, TeaCacheConfig(thresh=10.0, coefficients=IDENTITY))
    assert "forward" in vars(model)
    handle.remove()
    assert "forward" not in vars(model)
    assert not handle.active
    for (_, _, a), (_, _, b) in zip(reference, drive(model, [0.1] * 3)):
        assert torch.equal(a[0], b[0])
    assert model.block_runs == 4
    handle.remove()  # idempotent
    remove_teacache(model)


def test_applying_twice_is_refused_not_stacked():
    model = BareToyTransformer()
    apply_teacache(model, TeaCacheConfig(coefficients=IDENTITY))
    with pytest.raises(TeaCacheError, match="already applied"):
        apply_teacache(model, TeaCacheConfig(coefficients=IDENTITY))
    remove_teacache(model)
    apply_teacache(model, TeaCacheConfig(coefficients=IDENTITY))  # fine again after removal


def test_another_diffusers_cache_is_refused(flux_transformer):
    from diffusers.hooks import FirstBlockCacheConfig

    flux_transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    with pytest.raises(TeaCacheError, match="disable_cache"):
        apply_teacache(flux_transformer, TeaCacheConfig(coefficients=IDENTITY))


def test_unknown_transformer_class_names_it_and_lists_the_supported_ones():
    class MysteryTransformer(torch.nn.Module):
        pass

    with pytest.raises(UnknownTransformerError, match="MysteryTransformer.*FluxTransformer2DModel"):
        apply_teacache(MysteryTransformer(), TeaCacheConfig(coefficients=IDENTITY))
    with pytest.raises(UnknownTransformerError, match="supported: .*ToyTransformer"):
        get_extractor("MysteryTransformer")


def test_pipeline_without_transformer_is_refused():
    class UNetPipeline:
        unet = torch.nn.Linear(1, 1)

    with pytest.raises(TeaCacheError, match="no transformer component"):
        apply_teacache(UNetPipeline(), TeaCacheConfig(coefficients=IDENTITY))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(thresh=-0.1), "thresh must be a finite number >= 0"),
        (dict(thresh=math.nan), "thresh must be a finite number >= 0"),
        (dict(thresh="0.2"), "thresh must be a number"),
        (dict(coefficients=[]), "coefficients are required"),
        (dict(coefficients=[1.0, math.inf]), "coefficients must be finite"),
        (dict(ret_steps=-1), "ret_steps must be a non-negative integer"),
        (dict(rel_l1_range=(0.5, 0.1)), "low <= high"),
    ],
)
def test_config_validation(kwargs, message):
    arguments = dict(coefficients=IDENTITY) | kwargs
    with pytest.raises(TeaCacheError, match=message):
        TeaCacheConfig(**arguments)


def _context(**overrides) -> CacheContext:
    fields = dict(
        modulated_input=torch.ones(2),
        hidden_states=torch.ones(2),
        encoder_hidden_states=None,
        temb=torch.ones(1),
        run_transformer_blocks=lambda: (torch.ones(2),),
        postprocess=lambda h: h,
    )
    return CacheContext(**(fields | overrides))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(modulated_input=[1.0]), "modulated_input must be a torch.Tensor"),
        (dict(modulated_input=torch.ones(0)), "modulated_input is empty"),
        (dict(modulated_input=torch.ones(2, dtype=torch.long)), "must be floating point"),
        (dict(encoder_hidden_states="text"), "encoder_hidden_states must be a torch.Tensor or None"),
        (dict(run_transformer_blocks=None), "run_transformer_blocks must be callable"),
        (dict(extra_states=[1]), "extra_states must be a dict"),
    ],
)
def test_cache_context_validate_names_the_bad_field(overrides, message):
    with pytest.raises(ExtractorContractError, match=message):
        _context(**overrides).validate()


def test_block_outputs_must_match_the_streams():
    context = _context(encoder_hidden_states=torch.ones(3))
    with pytest.raises(ExtractorContractError, match="returned 1 stream"):
        context.check_block_outputs((torch.ones(2),))
    with pytest.raises(ExtractorContractError, match="shape"):
        context.check_block_outputs((torch.ones(2), torch.ones(4)))
    with pytest.raises(ExtractorContractError, match="tuple of tensors"):
        context.check_block_outputs(torch.ones(2))


class _UnnamedCfgPipeline:
    """Runs cond and uncond as two calls per step without cache_context, as Lumina2Pipeline does."""

    def __init__(self) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.transformer = BareToyTransformer()
        self.scheduler = FlowMatchEulerDiscreteScheduler()

    def __call__(self, steps: int, cond: list[float], uncond: list[float]) -> list[tuple]:
        self.scheduler.set_timesteps(steps)
        latents, outputs = torch.zeros(1, 4), []
        for index, t in enumerate(self.scheduler.timesteps):
            # The two branches have different shapes (caption lengths) and different trajectories.
            outputs.append(self.transformer(torch.ones(2, 3), torch.ones(5), modulated_sequence(cond)[index]))
            outputs.append(self.transformer(torch.ones(4, 3), torch.ones(7), modulated_sequence(uncond)[index]))
            latents = self.scheduler.step(torch.zeros(1, 4), t, latents).prev_sample
        return outputs


@torch.no_grad()
def test_unnamed_calls_in_one_step_get_a_state_each():
    pipe = _UnnamedCfgPipeline()
    handle = apply_teacache(pipe, TeaCacheConfig(thresh=0.25, coefficients=IDENTITY))
    pipe(6, cond=[0.1] * 5, uncond=[0.3] * 5)
    by_branch = {branch: totals for (_, branch), totals in handle.stats.by_branch().items()}
    assert set(by_branch) == {DEFAULT_BRANCH, f"{DEFAULT_BRANCH}#2"}
    assert pattern(r for r in handle.stats.records if r.branch == DEFAULT_BRANCH) == "F..C.F"
    assert pattern(r for r in handle.stats.records if r.branch != DEFAULT_BRANCH) == "FCCCCF"
    # A second generation starts both slots afresh.
    pipe(6, cond=[0.1] * 5, uncond=[0.3] * 5)
    assert [r.generation for r in handle.stats.records].count(1) == 12
    assert pattern(r for r in handle.stats.records if r.generation == 1) == pattern(
        r for r in handle.stats.records if r.generation == 0
    )


def _toy_with_alternative(module, image, text, modulated, timestep=None):
    context = extract_toy(module, image, text, modulated, timestep)
    # The alternative never moves: measured on it, every middle call is cached.
    context.modulated_alternatives = {"still": torch.ones(3)}
    return context


@torch.no_grad()
def test_a_preset_can_measure_on_a_named_alternative_modulated_input():
    from teacli import register_extractor

    class AltToy(BareToyTransformer):
        pass

    register_extractor("AltToy", _toy_with_alternative)
    default = apply_teacache(model := AltToy(), TeaCacheConfig(thresh=0.25, coefficients=IDENTITY))
    drive(model, [0.3, 0.3, 0.3])
    assert pattern(default.stats.records) == "FCCC"
    remove_teacache(model)
    config = TeaCacheConfig(thresh=0.25, coefficients=IDENTITY, modulated_input="still", num_inference_steps=4)
    alternative = apply_teacache(model, config)
    drive(model, [0.3, 0.3, 0.3])
    assert pattern(alternative.stats.records) == "F..F"
    remove_teacache(model)
    apply_teacache(model, TeaCacheConfig(thresh=0.25, coefficients=IDENTITY, modulated_input="nope"))
    with pytest.raises(ExtractorContractError, match=r"no modulated input named 'nope' \(offered: still\)"):
        drive(model, [0.3])


class _TwoExperts:
    def __init__(self) -> None:
        self.transformer, self.transformer_2 = BareToyTransformer(), BareToyTransformer()


@torch.no_grad()
def test_each_expert_gets_its_own_config():
    pipe = _TwoExperts()
    configs = {
        "transformer": TeaCacheConfig(thresh=0.25, coefficients=IDENTITY, num_inference_steps=4),
        "transformer_2": TeaCacheConfig(thresh=0.0, coefficients=IDENTITY, num_inference_steps=4),
    }
    handle = apply_teacache(pipe, configs)
    drive(pipe.transformer, [0.1, 0.1, 0.1])
    drive(pipe.transformer_2, [0.1, 0.1, 0.1])
    by_module = {module: [r for r in handle.stats.records if r.module == module] for module in configs}
    assert pattern(by_module["transformer"]) == "F..F" and pattern(by_module["transformer_2"]) == "FCCF"
    assert handle.configs == configs and handle.config is configs["transformer"]
    remove_teacache(pipe)
    with pytest.raises(TeaCacheError, match=r"missing \['transformer_2'\]; unknown \['transformer_3'\]"):
        apply_teacache(pipe, {"transformer": configs["transformer"], "transformer_3": configs["transformer_2"]})
    with pytest.raises(TypeError, match="mapping of denoiser name"):
        apply_teacache(pipe, {"transformer": 1})


@torch.no_grad()
def test_a_reset_between_runs_opens_a_new_generation():
    # Pipelines call reset_state at the end of every run (maybe_free_model_hooks); the records must
    # still number the next run as a new generation even when the pipeline tells the step index.
    model = ToyTransformer()
    handle = apply_teacache(model, TeaCacheConfig(thresh=0.25, coefficients=IDENTITY))
    drive(model, [0.1, 0.1])
    handle.hooks[0].reset_state(model)
    drive(model, [0.1, 0.1])
    assert [r.generation for r in handle.stats.records] == [0, 0, 0, 1, 1, 1]
    assert pattern(handle.stats.records) == "F..F.."
