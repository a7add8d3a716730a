"""Fidelity of the FLUX extractor on a tiny FluxTransformer2DModel (the real diffusers class)."""

import pytest
import torch
from support import flux_inputs, make_flux_transformer

from teacli import TeaCacheConfig, apply_teacache, get_extractor

FLUX_COEFFICIENTS = [4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01]


@torch.no_grad()
@pytest.mark.parametrize("return_dict", [True, False])
def test_caching_off_equals_the_unhooked_forward_in_both_cfg_branches(flux_transformer, return_dict):
    calls = [
        ("cond", flux_inputs(1, 0.9)),
        ("uncond", flux_inputs(2, 0.9)),
        ("cond", flux_inputs(3, 0.6)),
        ("uncond", flux_inputs(4, 0.6)),
        ("cond", flux_inputs(5, 0.3)),
        ("uncond", flux_inputs(6, 0.3)),
    ]

    def sample(output):
        return output.sample if return_dict else output[0]

    expected = []
    for branch, inputs in calls:
        with flux_transformer.cache_context(branch):
            expected.append(sample(flux_transformer(**inputs, return_dict=return_dict)))
    handle = apply_teacache(flux_transformer, TeaCacheConfig(thresh=0.0, coefficients=FLUX_COEFFICIENTS))
    for (branch, inputs), reference in zip(calls, expected):
        with flux_transformer.cache_context(branch):
            output = flux_transformer(**inputs, return_dict=return_dict)
        assert isinstance(output, tuple) != return_dict
        torch.testing.assert_close(sample(output), reference, rtol=1e-6, atol=1e-6)
    assert handle.stats.totals.cached == 0
    assert {r.branch for r in handle.stats.records} == {"cond", "uncond"}


@torch.no_grad()
def test_caching_off_with_controlnet_residuals_and_no_guidance():
    inputs = flux_inputs(7)
    inputs["guidance"] = None
    generator = torch.Generator().manual_seed(8)
    inputs["controlnet_block_samples"] = [torch.randn(1, 16, 32, generator=generator)]
    inputs["controlnet_single_block_samples"] = [torch.randn(1, 16, 32, generator=generator)] * 2
    model = make_flux_transformer(guidance_embeds=False)  # schnell-style: no guidance embedder
    reference = model(**inputs).sample
    apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=FLUX_COEFFICIENTS))
    torch.testing.assert_close(model(**inputs).sample, reference, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_cached_call_returns_postprocess_of_input_plus_cached_residual(flux_transformer):
    handle = apply_teacache(flux_transformer, TeaCacheConfig(thresh=1e9, coefficients=FLUX_COEFFICIENTS))
    first, second = flux_inputs(1, 0.9), flux_inputs(2, 0.8)
    flux_transformer(**first)
    hook = handle.hooks[0]
    residual = hook.state_manager.get_state().cached_residuals[0].clone()
    cached = flux_transformer(**second).sample
    assert [str(r.decision) for r in handle.stats.records] == ["forced", "cached"]

    context = get_extractor("FluxTransformer2DModel")(flux_transformer, **second)
    expected = context.postprocess(context.hidden_states + residual).sample
    assert torch.equal(cached, expected)
    # and the residual is what the blocks added on the computed call
    first_context = get_extractor("FluxTransformer2DModel")(flux_transformer, **first)
    (blocks_out,) = first_context.run_transformer_blocks()
    assert torch.equal(residual, blocks_out - first_context.hidden_states)


@torch.no_grad()
def test_modulated_input_is_the_first_block_norm1_output(flux_transformer):
    inputs = flux_inputs(3)
    context = get_extractor("FluxTransformer2DModel")(flux_transformer, **inputs)
    hidden = flux_transformer.x_embedder(inputs["hidden_states"])
    assert torch.equal(context.hidden_states, hidden)
    expected, *_ = flux_transformer.transformer_blocks[0].norm1(hidden, emb=context.temb)
    assert torch.equal(context.modulated_input, expected)
    assert context.timestep == pytest.approx(0.7)


def test_shared_fidelity_proofs_hold_for_flux(flux_transformer):
    from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

    calls = [("cond", flux_inputs(1, 0.9)), ("uncond", flux_inputs(2, 0.9)), (None, flux_inputs(3, 0.5))]
    assert_caching_off_matches_unhooked(flux_transformer, calls)
    (residual,) = assert_cached_call_is_input_plus_residual(flux_transformer, flux_inputs(1, 0.9), flux_inputs(2, 0.8))
    assert residual.shape == (1, 16, 32)
    assert_cached_call_is_input_plus_residual(flux_transformer, flux_inputs(1, 0.9), flux_inputs(2, 0.8), "cond")
