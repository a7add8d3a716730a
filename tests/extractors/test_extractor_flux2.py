"""Fidelity of the FLUX.2 extractor on a tiny Flux2Transformer2DModel (the real diffusers class).

Covers FLUX.2 [dev] (guidance embedder), FLUX.2 [klein] (no guidance, cond/uncond CFG branches) and the
reference-image KV cache of Flux2KleinKVPipeline ("extract" on step 0, "cached" afterwards).
"""

import inspect

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache

IMAGE_TOKENS, TEXT_TOKENS, REF_TOKENS = 16, 6, 4
CHANNELS, TEXT_DIM = 16, 48


def make_flux2(guidance_embeds: bool, kv: bool = False):
    from diffusers import Flux2Transformer2DModel
    from diffusers.models.transformers.transformer_flux2 import Flux2KVAttnProcessor, Flux2KVParallelSelfAttnProcessor

    torch.manual_seed(0)
    model = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=CHANNELS,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance_embeds,
    ).eval()
    if kv:  # what Flux2KleinKVPipeline._set_kv_attn_processors does
        for block in model.transformer_blocks:
            block.attn.set_processor(Flux2KVAttnProcessor())
        for block in model.single_transformer_blocks:
            block.attn.set_processor(Flux2KVParallelSelfAttnProcessor())
    return model


@pytest.fixture(scope="module")
def klein():
    return make_flux2(guidance_embeds=False)


@pytest.fixture(scope="module")
def dev():
    return make_flux2(guidance_embeds=True)


@pytest.fixture(scope="module")
def klein_kv():
    return make_flux2(guidance_embeds=False, kv=True)


def grid_ids(tokens: int, t: int = 0, batch: int = 1) -> torch.Tensor:
    """(T, H, W, L) ids as Flux2 pipelines make them: a square latent grid at time coordinate t."""
    side = int(tokens**0.5)
    ids = torch.cartesian_prod(torch.tensor([t]), torch.arange(side), torch.arange(side), torch.arange(1))
    return ids.unsqueeze(0).expand(batch, -1, -1)


def text_ids(tokens: int, batch: int = 1) -> torch.Tensor:
    ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(tokens))
    return ids.unsqueeze(0).expand(batch, -1, -1)


def inputs(seed: int, timestep: float = 0.7, batch: int = 1, guidance: float | None = None, **extra) -> dict:
    """Shaped as Flux2Pipeline / Flux2KleinPipeline pass them (packed latents, stacked text layers, 4-axis ids)."""
    generator = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, IMAGE_TOKENS, CHANNELS, generator=generator),
        encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=generator),
        timestep=torch.full((batch,), timestep),
        img_ids=grid_ids(IMAGE_TOKENS, batch=batch),
        txt_ids=text_ids(TEXT_TOKENS, batch=batch),
        guidance=None if guidance is None else torch.full((batch,), guidance),
        **extra,
    )


def reference_latents(seed: int = 99) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, REF_TOKENS, CHANNELS, generator=generator), grid_ids(REF_TOKENS, t=10)


def kv_extract_inputs(seed: int, timestep: float = 1.0, **extra) -> dict:
    """Step 0 of Flux2KleinKVPipeline: reference tokens prepended, their K/V extracted."""
    call = inputs(seed, timestep, **{"return_dict": False, **extra})
    ref, ref_ids = reference_latents()
    call["hidden_states"] = torch.cat([ref, call["hidden_states"]], dim=1)
    call["img_ids"] = torch.cat([ref_ids, call["img_ids"]], dim=1)
    return dict(call, kv_cache_mode="extract", num_ref_tokens=REF_TOKENS)


def kv_cached_inputs(seed: int, timestep: float, kv_cache, **extra) -> dict:
    """Steps 1+ of Flux2KleinKVPipeline: latents only, reference K/V injected from the cache."""
    return inputs(seed, timestep, kv_cache=kv_cache, kv_cache_mode="cached", **{"return_dict": False, **extra})


def test_caching_off_equals_the_unhooked_forward_for_klein_cfg_branches(klein):
    calls = [
        ("cond", inputs(1, 1.0, return_dict=False)),
        ("uncond", inputs(2, 1.0, return_dict=False)),
        ("cond", inputs(3, 0.75)),
        ("uncond", inputs(4, 0.75)),
        ("cond", inputs(5, 0.4, return_dict=False)),
        ("uncond", inputs(6, 0.4)),
    ]
    assert_caching_off_matches_unhooked(klein, calls)


def test_caching_off_with_guidance_batch_two_and_unbatched_ids(dev):
    two = inputs(7, 0.9, batch=2, guidance=4.0)
    unbatched = dict(inputs(8, 0.5, guidance=2.5), img_ids=grid_ids(IMAGE_TOKENS)[0], txt_ids=text_ids(TEXT_TOKENS)[0])
    calls = [(None, two), (None, dict(inputs(9, 0.7, batch=2, guidance=4.0), return_dict=False)), ("cond", unbatched)]
    assert_caching_off_matches_unhooked(dev, calls)


def test_caching_off_with_the_reference_kv_cache(klein_kv):
    with torch.no_grad():
        _, kv_cache = klein_kv(**kv_extract_inputs(1))
    calls = [
        ("cond", kv_extract_inputs(1)),
        ("cond", kv_cached_inputs(2, 0.8, kv_cache)),
        ("cond", kv_cached_inputs(3, 0.5, kv_cache, return_dict=True)),
    ]
    assert_caching_off_matches_unhooked(klein_kv, calls)


@torch.no_grad()
def test_hooked_extract_call_returns_the_same_populated_kv_cache(klein_kv):
    _, expected = klein_kv(**kv_extract_inputs(1))
    handle = apply_teacache(klein_kv, TeaCacheConfig(thresh=0.0, coefficients=(1.0, 0.0)))
    try:
        output = klein_kv(**dict(kv_extract_inputs(1), return_dict=True))
        _, got = klein_kv(**kv_extract_inputs(1))
    finally:
        remove_teacache(klein_kv)
    assert output.kv_cache is not None and got.num_ref_tokens == expected.num_ref_tokens == REF_TOKENS
    got_layers = got.double_block_caches + got.single_block_caches
    expected_layers = expected.double_block_caches + expected.single_block_caches
    assert len(got_layers) == len(expected_layers) == 4
    for actual, wanted in zip(got_layers, expected_layers):
        assert torch.equal(actual.k_ref, wanted.k_ref) and torch.equal(actual.v_ref, wanted.v_ref)
    assert handle.stats.totals.cached == 0


def test_cached_call_is_input_plus_residual(klein, dev):
    (residual,) = assert_cached_call_is_input_plus_residual(klein, inputs(1, 0.9), inputs(2, 0.8))
    assert residual.shape == (1, IMAGE_TOKENS, 32)
    assert_cached_call_is_input_plus_residual(klein, inputs(1, 0.9), inputs(2, 0.8, return_dict=False), "uncond")
    assert_cached_call_is_input_plus_residual(dev, inputs(3, 0.9, guidance=4.0), inputs(4, 0.8, guidance=4.0), "cond")


def test_a_cached_step_after_the_kv_extract_step_reuses_the_noisy_token_residual(klein_kv):
    with torch.no_grad():
        _, kv_cache = klein_kv(**kv_extract_inputs(1))
    (residual,) = assert_cached_call_is_input_plus_residual(
        klein_kv, kv_extract_inputs(1), kv_cached_inputs(2, 0.8, kv_cache), "cond"
    )
    assert residual.shape == (1, IMAGE_TOKENS, 32)  # the reference tokens are not part of the cached stream


def _first_attention_input(model, call: dict) -> torch.Tensor:
    """The image-stream input of the first block's attention, captured from the unhooked forward."""
    seen = []

    def grab(_module, _args, kwargs):
        seen.append(kwargs["hidden_states"])

    handle = model.transformer_blocks[0].attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**call)
    finally:
        handle.remove()
    return seen[0]


@torch.no_grad()
@pytest.mark.parametrize("variant", ["klein", "dev"])
def test_modulated_input_is_the_first_block_modulated_norm1(klein, dev, variant):
    model, call = (klein, inputs(3, 0.6)) if variant == "klein" else (dev, inputs(3, 0.6, guidance=4.0))
    context = get_extractor("Flux2Transformer2DModel")(model, **call)
    hidden = model.x_embedder(call["hidden_states"])
    assert torch.equal(context.hidden_states, hidden)
    guidance = None if call["guidance"] is None else call["guidance"] * 1000
    temb = model.time_guidance_embed(call["timestep"] * 1000, guidance)
    assert torch.equal(context.temb, temb)
    shift, scale = model.double_stream_modulation_img(temb).unsqueeze(1).chunk(6, dim=-1)[:2]
    expected = (1 + scale) * model.transformer_blocks[0].norm1(hidden) + shift
    assert torch.equal(context.modulated_input, expected)
    # and it is exactly what the first block's attention receives for the image stream
    torch.testing.assert_close(context.modulated_input, _first_attention_input(model, call), rtol=0, atol=0)
    assert context.encoder_hidden_states is None
    assert context.timestep == pytest.approx(0.6)


@torch.no_grad()
def test_modulated_input_skips_the_reference_tokens_when_extracting(klein_kv):
    call = kv_extract_inputs(5)
    context = get_extractor("Flux2Transformer2DModel")(klein_kv, **call)
    attention_input = _first_attention_input(klein_kv, call)
    assert attention_input.shape[1] == REF_TOKENS + IMAGE_TOKENS
    torch.testing.assert_close(context.modulated_input, attention_input[:, REF_TOKENS:], rtol=0, atol=0)
    assert torch.equal(context.hidden_states, klein_kv.x_embedder(call["hidden_states"])[:, REF_TOKENS:])


def test_lora_scale_in_joint_attention_kwargs_is_accepted_with_caching_off(klein):
    calls = [
        ("cond", inputs(1, 0.9, joint_attention_kwargs={"scale": 0.5})),
        ("cond", inputs(2, 0.6, joint_attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(klein, calls)


def test_signature_mirrors_the_forward_and_names_the_lora_kwargs():
    from diffusers import Flux2Transformer2DModel

    extractor = get_extractor("Flux2Transformer2DModel")
    forward = inspect.signature(Flux2Transformer2DModel.forward).parameters
    mine = inspect.signature(extractor).parameters
    assert list(mine)[1:] == list(forward)[1:]
    assert [p.default for p in mine.values()][1:] == [p.default for p in forward.values()][1:]
    assert extractor.lora_kwargs == "joint_attention_kwargs"


def test_caching_off_with_gradient_checkpointing_gives_the_same_output_and_gradients():
    model = make_flux2(guidance_embeds=False)
    model.enable_gradient_checkpointing()
    call = inputs(4, 0.7)

    def output_and_grad():
        model.zero_grad()
        sample = model(**call).sample
        sample.square().mean().backward()
        return sample.detach(), model.x_embedder.weight.grad.clone()

    expected = output_and_grad()
    apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=(1.0, 0.0)))
    try:
        got = output_and_grad()
    finally:
        remove_teacache(model)
    for actual, wanted in zip(got, expected):
        torch.testing.assert_close(actual, wanted, rtol=1e-6, atol=1e-6)
