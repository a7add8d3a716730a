"""Fidelity of the CogVideoX extractor on tiny CogVideoXTransformer3DModels (the real diffusers class),
shaped as CogVideoX-2b (sin-cos positions), CogVideoX-5b (RoPE) and CogVideoX 1.5 I2V (RoPE, 3D patches
with patch_size_t, ofs embedding)."""

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor

HEAD_DIM = 16
TEXT_LEN = 6
FRAMES, SIZE = 2, 4  # latent frames and latent height/width


def make(variant: str) -> CogVideoXTransformer3DModel:
    torch.manual_seed(0)
    common = dict(
        num_attention_heads=2,
        attention_head_dim=HEAD_DIM,
        in_channels=4,
        out_channels=4,
        time_embed_dim=16,
        text_embed_dim=24,
        num_layers=2,
        sample_width=SIZE,
        sample_height=SIZE,
        sample_frames=(FRAMES - 1) * 4 + 1,
        patch_size=2,
        max_text_seq_length=TEXT_LEN,
    )
    if variant == "2b":
        return CogVideoXTransformer3DModel(**common).eval()
    if variant == "5b":
        return CogVideoXTransformer3DModel(**common, use_rotary_positional_embeddings=True).eval()
    assert variant == "1.5-i2v"
    return CogVideoXTransformer3DModel(
        **{**common, "in_channels": 8},  # I2V: image latents are concatenated to the noise channels
        patch_size_t=2,
        ofs_embed_dim=16,
        use_rotary_positional_embeddings=True,
        patch_bias=False,
    ).eval()


@pytest.fixture(scope="module", params=["2b", "5b", "1.5-i2v"])
def model(request):
    return make(request.param)


def rotary(model: CogVideoXTransformer3DModel, frames: int = FRAMES) -> tuple[torch.Tensor, torch.Tensor] | None:
    """image_rotary_emb as CogVideoXPipeline._prepare_rotary_positional_embeddings makes it."""
    config = model.config
    if not config.use_rotary_positional_embeddings:
        return None
    grid = SIZE // config.patch_size
    base = config.sample_width // config.patch_size
    if config.patch_size_t is None:
        crops = get_resize_crop_region_for_grid((grid, grid), base, base)
        return get_3d_rotary_pos_embed(HEAD_DIM, crops, (grid, grid), frames)
    frames = (frames + config.patch_size_t - 1) // config.patch_size_t
    return get_3d_rotary_pos_embed(HEAD_DIM, None, (grid, grid), frames, grid_type="slice", max_size=(base, base))


def inputs(model, seed: int, timestep: int = 700, batch: int = 1, **extra) -> dict:
    """Shaped as the CogVideoX pipelines pass them: latents (B, F, C, H, W), T5 embeddings, integer timesteps."""
    generator = torch.Generator().manual_seed(seed)
    values = dict(
        hidden_states=torch.randn(batch, FRAMES, model.config.in_channels, SIZE, SIZE, generator=generator),
        encoder_hidden_states=torch.randn(batch, TEXT_LEN, 24, generator=generator),
        timestep=torch.full((batch,), timestep, dtype=torch.long),
        image_rotary_emb=rotary(model),
    )
    if model.config.ofs_embed_dim is not None:
        values["ofs"] = torch.full((1,), 2.0)  # what CogVideoXImageToVideoPipeline passes
    return {**values, **extra}


def test_caching_off_equals_the_unhooked_forward_across_branches_and_steps(model):
    calls = [
        ("cond_uncond", inputs(model, 1, 999, batch=2, return_dict=False)),
        ("cond", inputs(model, 2, 999)),
        ("cond_uncond", inputs(model, 3, 600, batch=2)),
        ("uncond", inputs(model, 4, 600, return_dict=False)),
        ("cond_uncond", inputs(model, 5, 250, batch=2, return_dict=False)),
        (None, inputs(model, 6, 250)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_with_timestep_cond_and_lora_scale_in_attention_kwargs():
    # No checkpoint has a time-embedding cond_proj, but the forward takes timestep_cond: give the
    # embedding one so the argument is exercised.
    model = make("5b")
    model.time_embedding.cond_proj = torch.nn.Linear(8, HEAD_DIM * 2, bias=False)
    cond = torch.randn(1, 8, generator=torch.Generator().manual_seed(9))
    calls = [
        ("cond_uncond", inputs(model, 1, 900, timestep_cond=cond, attention_kwargs={"scale": 0.5})),
        ("cond_uncond", inputs(model, 2, 700, timestep_cond=cond, attention_kwargs={}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


@pytest.mark.parametrize("variant", ["5b", "1.5-i2v"])
def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(variant):
    model = make(variant)
    calls = [
        ("cond_uncond", inputs(model, 1, 900, attention_kwargs={"scale": 0.5})),
        ("cond_uncond", inputs(model, 2, 800, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_cached_call_is_input_plus_residual(model):
    first, second = inputs(model, 1, 900, batch=2), inputs(model, 2, 850, batch=2)
    (residual,) = assert_cached_call_is_input_plus_residual(model, first, second, "cond_uncond")
    p_t = model.config.patch_size_t or 1
    tokens = FRAMES // p_t * (SIZE // 2) ** 2
    assert residual.shape == (2, tokens, 2 * HEAD_DIM)  # video tokens only: the text stream is not cached
    assert_cached_call_is_input_plus_residual(model, inputs(model, 3, 900), inputs(model, 4, 850, return_dict=False))


@torch.no_grad()
def test_modulated_input_is_the_timestep_embedding_as_in_teacache4cogvideox(model):
    given = inputs(model, 3, 400)
    context = get_extractor("CogVideoXTransformer3DModel")(model, **given)
    emb = model.time_embedding(model.time_proj(given["timestep"]))
    if model.ofs_embedding is not None:
        emb = emb + model.ofs_embedding(model.ofs_proj(given["ofs"]))
    assert torch.equal(context.modulated_input, emb)
    assert torch.equal(context.temb, emb)
    joint = model.patch_embed(given["encoder_hidden_states"], given["hidden_states"])
    assert torch.equal(context.hidden_states, joint[:, TEXT_LEN:])
    assert context.encoder_hidden_states is None
    assert context.timestep == pytest.approx(400.0)


@torch.no_grad()
def test_output_shape_is_the_latent_shape(model):
    context = get_extractor("CogVideoXTransformer3DModel")(model, **inputs(model, 5, 300), return_dict=False)
    (sample,) = context.postprocess(*context.run_transformer_blocks())
    assert sample.shape == (1, FRAMES, 4, SIZE, SIZE)  # out_channels 4 for every variant, I2V included
