"""Fidelity of the LongCat-Image extractor on a tiny LongCatImageTransformer2DModel (the real diffusers class)."""

import pytest
import torch
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache

TEXT_TOKENS, GRID = 6, 4  # a 4x4 latent grid: 16 image tokens


def make_longcat_transformer():
    from diffusers import LongCatImageTransformer2DModel

    torch.manual_seed(0)
    model = LongCatImageTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        pooled_projection_dim=24,
        axes_dims_rope=[4, 6, 6],
    )
    return model.eval()


@pytest.fixture(scope="module")
def longcat_transformer():
    return make_longcat_transformer()


def _ids(modality: int, rows: int, cols: int, start: int = 0) -> torch.Tensor:
    # As the pipeline's prepare_pos_ids: (modality, row, col) per token.
    ids = torch.zeros(rows, cols, 3)
    ids[..., 0] = modality
    ids[..., 1] = torch.arange(rows)[:, None] + start
    ids[..., 2] = torch.arange(cols)[None, :] + start
    return ids.reshape(rows * cols, 3)


def longcat_inputs(seed: int, timestep: float = 0.7, edit: bool = False, return_dict: bool = True) -> dict:
    """Shaped as LongCatImagePipeline passes them (timestep / 1000, guidance None); `edit` appends
    reference-image tokens as LongCatImageEditPipeline does."""
    generator = torch.Generator().manual_seed(seed)
    image_tokens = GRID * GRID * (2 if edit else 1)
    text_ids = torch.zeros(TEXT_TOKENS, 3)
    text_ids[:, 1] = text_ids[:, 2] = torch.arange(TEXT_TOKENS)
    img_ids = _ids(1, GRID, GRID, start=TEXT_TOKENS)
    if edit:
        img_ids = torch.cat([img_ids, _ids(2, GRID, GRID, start=TEXT_TOKENS)])
    return dict(
        hidden_states=torch.randn(1, image_tokens, 16, generator=generator),
        timestep=torch.full((1,), timestep),
        guidance=None,
        encoder_hidden_states=torch.randn(1, TEXT_TOKENS, 24, generator=generator),
        txt_ids=text_ids,
        img_ids=img_ids,
        return_dict=return_dict,
    )


@pytest.mark.parametrize("return_dict", [True, False])
def test_caching_off_equals_the_unhooked_forward_in_both_cfg_branches(longcat_transformer, return_dict):
    calls = [
        (branch, longcat_inputs(seed, t, return_dict=return_dict))
        for seed, (branch, t) in enumerate([("cond", 0.9), ("uncond", 0.9), ("cond", 0.6), ("uncond", 0.6)])
    ]
    calls.append((None, longcat_inputs(9, 0.3, return_dict=return_dict)))
    assert_caching_off_matches_unhooked(longcat_transformer, calls)


def test_caching_off_with_edit_reference_tokens_and_a_guidance_tensor(longcat_transformer):
    first, second = longcat_inputs(1, 0.8, edit=True), longcat_inputs(2, 0.4, edit=True)
    second["guidance"] = torch.full((1,), 4.5)  # accepted and ignored upstream
    assert_caching_off_matches_unhooked(longcat_transformer, [("cond", first), ("cond", second)])


def test_caching_off_with_gradient_checkpointing():
    model = make_longcat_transformer()
    model.enable_gradient_checkpointing()
    model.use_single_checkpoint = [False]  # one block through each branch of the loop
    inputs = longcat_inputs(3)
    reference = model(**inputs).sample
    apply_teacache(model, TeaCacheConfig(thresh=0.0, coefficients=(1.0, 0.0)))
    try:
        output = model(**inputs).sample
    finally:
        remove_teacache(model)
    torch.testing.assert_close(output, reference, rtol=1e-6, atol=1e-6)
    assert output.requires_grad


def test_cached_call_returns_postprocess_of_input_plus_cached_residual(longcat_transformer):
    (residual,) = assert_cached_call_is_input_plus_residual(
        longcat_transformer, longcat_inputs(1, 0.9), longcat_inputs(2, 0.8)
    )
    assert residual.shape == (1, GRID * GRID, 32)
    first, second = longcat_inputs(3, 0.9, return_dict=False), longcat_inputs(4, 0.8, return_dict=False)
    assert_cached_call_is_input_plus_residual(longcat_transformer, first, second, "uncond")


@torch.no_grad()
def test_modulated_input_is_the_first_block_norm1_output(longcat_transformer):
    inputs = longcat_inputs(5, 0.7)
    context = get_extractor("LongCatImageTransformer2DModel")(longcat_transformer, **inputs)
    hidden = longcat_transformer.x_embedder(inputs["hidden_states"])
    temb = longcat_transformer.time_embed(inputs["timestep"] * 1000, hidden.dtype)
    assert torch.equal(context.hidden_states, hidden)
    assert torch.equal(context.temb, temb)
    expected, *_ = longcat_transformer.transformer_blocks[0].norm1(hidden, emb=temb)
    assert torch.equal(context.modulated_input, expected)
    assert context.encoder_hidden_states is None
    assert context.timestep == pytest.approx(0.7)


def test_signature_mirrors_the_forward_and_takes_no_lora_scale():
    import inspect

    from diffusers import LongCatImageTransformer2DModel

    extractor = get_extractor("LongCatImageTransformer2DModel")
    forward = list(inspect.signature(LongCatImageTransformer2DModel.forward).parameters)[1:]
    assert list(inspect.signature(extractor).parameters)[1:] == forward
    # The forward has no apply_lora_scale decorator and no attention kwargs to carry a scale.
    assert getattr(extractor, "lora_kwargs", None) is None
