"""Fidelity of the Z-Image extractor on a tiny ZImageTransformer2DModel (the real diffusers class).

ZImageTransformer2DModel has no cache_context (no CacheMixin) and ZImagePipeline batches CFG into
one call, so every call here is in the default branch; CFG is a batch of two with captions of
different lengths, which also exercises the padding masks. The forward returns a list of
per-image tensors; the shared proofs compare every one of them.
"""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache

CHANNELS, CAP_DIM, SIGLIP_DIM, DIM = 16, 24, 8, 32
EXTRACTOR = "ZImageTransformer2DModel"


def make_z_image_transformer(siglip: bool = False):
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(0)
    model = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=CHANNELS,  # 2x2x16 = 64 = X_PAD_DIM, which omni mode's empty-image slots assume
        dim=DIM,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=CAP_DIM,
        siglip_feat_dim=SIGLIP_DIM if siglip else None,
        axes_dims=[4, 6, 6],  # must sum to the head dim, 32 / 2
        axes_lens=[256, 64, 64],
    )
    return model.eval()


@pytest.fixture(scope="module")
def z_image_transformer():
    return make_z_image_transformer()


@pytest.fixture(scope="module")
def omni_transformer():
    return make_z_image_transformer(siglip=True)


def z_image_inputs(seed: int, t: float = 0.3, caption_lengths=(10, 40), grid: int = 4, **extra) -> dict:
    """Shaped as ZImagePipeline passes them: per-image latents (C, 1, H, W), t = (1000 - timestep) / 1000
    rising from 0 to 1, per-prompt caption embeddings of their own lengths. Two captions = batched CFG."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(caption_lengths)
    return dict(
        x=[torch.randn(CHANNELS, 1, grid, grid, generator=generator) for _ in range(batch)],
        t=torch.full((batch,), t),
        cap_feats=[torch.randn(n, CAP_DIM, generator=generator) for n in caption_lengths],
        **extra,
    )


def omni_inputs(seed: int, t: float = 0.3, **extra) -> dict:
    """Shaped as ZImageOmniPipeline passes them: one condition image and the target per item, three
    caption segments, SigLIP features for the condition image (None for the target), noise mask [0, 1]."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    return dict(
        x=[[randn(CHANNELS, 1, 4, 4), randn(CHANNELS, 1, 4, 4)]],
        t=torch.full((1,), t),
        cap_feats=[[randn(5, CAP_DIM), randn(3, CAP_DIM), randn(4, CAP_DIM)]],
        siglip_feats=[[randn(2, 2, SIGLIP_DIM), None]],
        image_noise_mask=[[0, 1]],
        **extra,
    )


@pytest.mark.parametrize("return_dict", [True, False])
def test_caching_off_equals_the_unhooked_forward_with_batched_cfg(z_image_transformer, return_dict):
    calls = [(None, z_image_inputs(seed, t, return_dict=return_dict)) for seed, t in ((1, 0.1), (2, 0.4), (3, 0.7))]
    assert_caching_off_matches_unhooked(z_image_transformer, calls)


def test_caching_off_with_controlnet_residuals_and_one_image(z_image_transformer):
    generator = torch.Generator().manual_seed(9)
    # One image: 4 tokens padded to 32, one 10-token caption padded to 32.
    residuals = {1: torch.randn(1, 64, DIM, generator=generator)}
    calls = [
        (None, z_image_inputs(seed, t, caption_lengths=(10,), controlnet_block_samples=residuals))
        for seed, t in ((4, 0.2), (5, 0.5))
    ]
    assert_caching_off_matches_unhooked(z_image_transformer, calls)


def test_caching_off_in_omni_mode_with_siglip(omni_transformer):
    calls = [(None, omni_inputs(6, 0.2)), (None, omni_inputs(7, 0.5, return_dict=False))]
    assert_caching_off_matches_unhooked(omni_transformer, calls)


def test_lora_scale_is_accepted_and_changes_nothing_else(z_image_transformer):
    calls = [(None, z_image_inputs(seed, t, joint_attention_kwargs={"scale": 0.5})) for seed, t in ((1, 0.2), (2, 0.6))]
    assert_caching_off_matches_unhooked(z_image_transformer, calls)


def test_cached_call_is_input_plus_residual(z_image_transformer):
    (residual,) = assert_cached_call_is_input_plus_residual(
        z_image_transformer, z_image_inputs(1, 0.3), z_image_inputs(2, 0.4)
    )
    # The unified stream: 2 prompts, 32 image tokens + up to 64 caption tokens each, padded.
    assert residual.shape == (2, 96, DIM)


def test_cached_call_is_input_plus_residual_in_omni_mode(omni_transformer):
    (residual,) = assert_cached_call_is_input_plus_residual(omni_transformer, omni_inputs(1, 0.3), omni_inputs(2, 0.4))
    # 3 caption segments, 2 images, 2 SigLIP slots: 32 tokens each after padding.
    assert residual.shape == (1, 7 * 32, DIM)


def _first_layer_inputs(model, inputs):
    """What the unhooked forward feeds layers[0] and its attention, captured with pre-hooks."""
    seen = {}

    def layer_hook(_module, args):
        seen["unified"] = args[0]

    def attention_hook(_module, args, kwargs):
        seen["attention"] = args[0] if args else kwargs["hidden_states"]

    handles = [
        model.layers[0].register_forward_pre_hook(layer_hook),
        model.layers[0].attention.register_forward_pre_hook(attention_hook, with_kwargs=True),
    ]
    try:
        model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@torch.no_grad()
@pytest.mark.parametrize("omni", [False, True])
def test_modulated_input_is_the_first_main_layer_attention_input(z_image_transformer, omni_transformer, omni):
    model, inputs = (omni_transformer, omni_inputs(3, 0.25)) if omni else (z_image_transformer, z_image_inputs(3, 0.25))
    context = get_extractor(EXTRACTOR)(model, **inputs)
    seen = _first_layer_inputs(model, inputs)
    assert torch.equal(context.hidden_states, seen["unified"])
    # attention_norm1(unified) * (1 + scale_msa): the first main layer's modulated norm, as vllm-omni takes it.
    assert torch.equal(context.modulated_input, seen["attention"])
    if not omni:
        layer = model.layers[0]
        scale = 1.0 + layer.adaLN_modulation(context.temb).unsqueeze(1).chunk(4, dim=2)[0]
        assert torch.equal(context.modulated_input, layer.attention_norm1(seen["unified"]) * scale)
    assert context.timestep == pytest.approx(0.75)  # recorded as the noise level 1 - t


def test_gradient_checkpointing_branch_matches_the_forward():
    model = make_z_image_transformer()
    model.enable_gradient_checkpointing()
    inputs = z_image_inputs(8, 0.4)
    with torch.enable_grad():
        expected = model(**inputs).sample
        context = get_extractor(EXTRACTOR)(model, **inputs)
        output = context.postprocess(*context.run_transformer_blocks()).sample
    for actual, wanted in zip(output, expected):
        torch.testing.assert_close(actual, wanted, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_steps_of_a_bare_transformer_follow_the_rising_t(z_image_transformer):
    """t rises over a generation; the hook must see one generation, not a new one each call."""
    handle = apply_teacache(z_image_transformer, TeaCacheConfig(thresh=0.0, coefficients=(1.0, 0.0)))
    try:
        for seed, t in ((1, 0.1), (2, 0.5), (3, 0.9)):
            z_image_transformer(**z_image_inputs(seed, t))
        assert [r.step for r in handle.stats.records] == [0, 1, 2]
        assert {r.generation for r in handle.stats.records} == {0}
    finally:
        remove_teacache(z_image_transformer)
