"""Fidelity of the Cosmos extractor on tiny CosmosTransformer3DModel instances (the real diffusers class)."""

import types

import pytest
import torch
from diffusers import EDMEulerScheduler
from diffusers.models.transformers import transformer_cosmos
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache

COSMOS_COEFFICIENTS = [2.71156237e02, -9.19775607e01, 2.24437250e00, 2.08355751e00, 1.41776330e-01]
FRAMES, HEIGHT, WIDTH = 3, 8, 8


@pytest.fixture(autouse=True)
def padding_mask_resize(monkeypatch):
    """The forward resizes the padding mask with torchvision; without it, the same NEAREST resize in torch."""
    if getattr(transformer_cosmos, "transforms", None) is None:

        def resize(tensor, size, interpolation):
            return torch.nn.functional.interpolate(tensor, size=size, mode=interpolation)

        shim = types.SimpleNamespace(
            functional=types.SimpleNamespace(resize=resize), InterpolationMode=types.SimpleNamespace(NEAREST="nearest")
        )
        monkeypatch.setattr(transformer_cosmos, "transforms", shim, raising=False)


def make_cosmos(**overrides):
    """Cosmos 1.0-shaped by default: learnable positional embedding, padding mask, 1-D timesteps."""
    from diffusers import CosmosTransformer3DModel

    torch.manual_seed(0)
    config = dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=2,
        mlp_ratio=2.0,
        text_embed_dim=16,
        adaln_lora_dim=8,
        max_size=(8, 16, 16),
        patch_size=(1, 2, 2),
        rope_scale=(2.0, 1.0, 1.0),
        concat_padding_mask=True,
        extra_pos_embed_type="learnable",
    )
    model = CosmosTransformer3DModel(**{**config, **overrides}).eval()
    if model.learnable_pos_embed is not None:  # zeros at init: make the embedding count
        for parameter in model.learnable_pos_embed.parameters():
            torch.nn.init.normal_(parameter)
    return model


def make_predict2_video():
    """Cosmos-Predict2 Video2World-shaped: a condition-mask channel, no learnable positional embedding."""
    return make_cosmos(in_channels=5, extra_pos_embed_type=None, rope_scale=(1.0, 2.0, 2.0))


def make_transfer():
    """Cosmos-Transfer2.5-shaped: cross-attention projection, image context, ControlNet every block."""
    return make_cosmos(
        in_channels=5,
        extra_pos_embed_type=None,
        use_crossattn_projection=True,
        crossattn_proj_in_channels=20,
        encoder_hidden_states_channels=16,
        controlnet_block_every_n=1,
        img_context_dim_in=8,
        img_context_num_tokens=4,
        img_context_dim_out=24,
    )


def text2world_inputs(seed: int, t: float = 0.7, **extra) -> dict:
    generator = torch.Generator().manual_seed(seed)
    # Pixel-sized, as the pipelines pass it; the forward resizes it to the latents.
    padding_mask = torch.zeros(1, 1, 2 * HEIGHT, 2 * WIDTH)
    padding_mask[..., -4:] = 1.0
    inputs = dict(
        hidden_states=torch.randn(1, 4, FRAMES, HEIGHT, WIDTH, generator=generator),
        timestep=torch.full((1,), t),
        encoder_hidden_states=torch.randn(1, 6, 16, generator=generator),
        fps=30,
        padding_mask=padding_mask,
    )
    return {**inputs, **extra}


def video2world_inputs(seed: int, t: float = 0.7, **extra) -> dict:
    """As Cosmos2VideoToWorldPipeline passes them: per-frame timesteps, the first frame conditioned."""
    inputs = text2world_inputs(seed, t, **extra)
    timestep = torch.full((1, 1, FRAMES, 1, 1), t)
    timestep[:, :, 0] = 1e-4 / (1 + 1e-4)
    condition_mask = torch.zeros(1, 1, FRAMES, HEIGHT, WIDTH)
    condition_mask[:, :, 0] = 1.0
    return {**inputs, "timestep": timestep, "condition_mask": condition_mask, "fps": 16}


def transfer_inputs(seed: int, t: float = 0.7) -> dict:
    generator = torch.Generator().manual_seed(seed + 100)
    inputs = video2world_inputs(seed, t)
    inputs.pop("fps")
    inputs["encoder_hidden_states"] = (
        torch.randn(1, 6, 20, generator=generator),
        torch.randn(1, 4, 8, generator=generator),
    )
    inputs["block_controlnet_hidden_states"] = [torch.randn(1, 48, 24, generator=generator) for _ in range(2)]
    return inputs


@pytest.fixture(scope="module")
def cosmos():
    return make_cosmos()


def test_caching_off_equals_the_unhooked_forward_text2world(cosmos):
    mask = torch.ones(1, 6, dtype=torch.bool)
    mask[:, 4:] = False
    calls = [
        (None, text2world_inputs(1, 0.9)),
        (None, text2world_inputs(2, 0.9, return_dict=False)),
        (None, text2world_inputs(3, 0.5, attention_mask=mask)),
        (None, text2world_inputs(4, 0.5, return_dict=False, fps=None)),  # images: no fps scaling
        (None, text2world_inputs(5, 0.2, attention_mask=mask, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(cosmos, calls)


def test_caching_off_equals_the_unhooked_forward_video2world_per_frame_timesteps():
    model = make_predict2_video()
    calls = [
        (None, video2world_inputs(1, 0.9)),
        (None, video2world_inputs(2, 0.6, return_dict=False)),
        (None, video2world_inputs(3, 0.3)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_equals_the_unhooked_forward_with_controlnet_and_image_context():
    model = make_transfer()
    calls = [(None, transfer_inputs(1, 0.9)), (None, {**transfer_inputs(2, 0.5), "return_dict": False})]
    assert_caching_off_matches_unhooked(model, calls)
    assert_cached_call_is_input_plus_residual(model, transfer_inputs(1, 0.9), transfer_inputs(2, 0.8))


def test_cached_call_is_input_plus_residual(cosmos):
    first, second = text2world_inputs(1, 0.9), text2world_inputs(2, 0.8)
    (residual,) = assert_cached_call_is_input_plus_residual(cosmos, first, second)
    assert residual.shape == (1, FRAMES * 4 * 4, 24)
    model = make_predict2_video()
    assert_cached_call_is_input_plus_residual(
        model, video2world_inputs(1, 0.9), video2world_inputs(2, 0.8, return_dict=False)
    )


@torch.no_grad()
def test_modulated_input_is_the_first_block_norm1_output_before_the_positional_embedding(cosmos):
    inputs = text2world_inputs(3, 0.6)
    context = get_extractor("CosmosTransformer3DModel")(cosmos, **inputs)
    latents = torch.cat([inputs["hidden_states"], torch.zeros(1, 1, FRAMES, HEIGHT, WIDTH)], dim=1)
    latents[:, -1, ..., -2:] = 1.0  # the padding mask channel
    hidden = cosmos.patch_embed(latents).flatten(1, 3)
    assert torch.equal(context.hidden_states, hidden)
    temb, embedded = cosmos.time_embed(hidden, inputs["timestep"])
    norm1 = cosmos.transformer_blocks[0].norm1
    shift, scale, _ = (norm1.linear_2(norm1.linear_1(torch.nn.functional.silu(embedded))) + temb).chunk(3, dim=-1)
    expected = norm1.norm(hidden) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
    torch.testing.assert_close(context.modulated_input, expected, rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(0.6)
    # per-frame timesteps: the record is the noise level of the generated frames, not the conditioned one
    per_frame = get_extractor("CosmosTransformer3DModel")(make_predict2_video(), **video2world_inputs(1, 0.4))
    assert per_frame.timestep == pytest.approx(0.4)


class _Pipe:
    def __init__(self, transformer, scheduler):
        self.transformer, self.scheduler = transformer, scheduler


def _text2world_loop(pipe, steps: int) -> list[torch.Tensor]:
    """CosmosTextToWorldPipeline's loop: cond then uncond as two calls, no cache_context, two scheduler steps."""
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, FRAMES, HEIGHT, WIDTH, generator=generator) * scheduler.init_noise_sigma
    cond, uncond = text2world_inputs(1)["encoder_hidden_states"], text2world_inputs(2)["encoder_hidden_states"]
    padding_mask = torch.zeros(1, 1, 2 * HEIGHT, 2 * WIDTH)
    predictions = []
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        kwargs = dict(hidden_states=model_input, timestep=t.expand(1), fps=30, padding_mask=padding_mask)
        noise_cond = pipe.transformer(encoder_hidden_states=cond, **kwargs, return_dict=False)[0]
        noise_uncond = pipe.transformer(encoder_hidden_states=uncond, **kwargs, return_dict=False)[0]
        predictions += [noise_cond, noise_uncond]
        noise_pred = scheduler.step(torch.cat([noise_uncond, noise_cond]), t, torch.cat([latents, latents]))[1]
        scheduler._step_index -= 1
        noise_uncond, noise_cond = noise_pred.chunk(2)
        noise_pred = noise_cond + 7.0 * (noise_cond - noise_uncond)
        latents = scheduler.step(noise_pred, t, latents, pred_original_sample=noise_pred)[0]
    return predictions


@torch.no_grad()
def test_pipeline_cond_and_uncond_calls_without_cache_context_keep_separate_states(cosmos):
    pipe = _Pipe(cosmos, EDMEulerScheduler())
    reference = _text2world_loop(pipe, 4)

    handle = apply_teacache(pipe, TeaCacheConfig(thresh=0.0, coefficients=COSMOS_COEFFICIENTS))
    try:
        for got, wanted in zip(_text2world_loop(pipe, 4), reference):
            torch.testing.assert_close(got, wanted, rtol=1e-6, atol=1e-6)
        records = handle.stats.records
        assert [(r.branch, r.step) for r in records] == [(b, s) for s in range(4) for b in ("default", "default#2")]
    finally:
        remove_teacache(pipe)

    # Caching everything it may: steps 1 and 2 reuse each branch's own residual, never the other's.
    handle = apply_teacache(pipe, TeaCacheConfig(thresh=1e9, coefficients=COSMOS_COEFFICIENTS))
    try:
        cached = _text2world_loop(pipe, 4)
        decisions = [(r.branch, r.step, str(r.decision)) for r in handle.stats.records]
        assert [d for b, s, d in decisions if b == "default"] == [d for b, s, d in decisions if b == "default#2"]
        assert [d for b, s, d in decisions if b == "default"] == ["forced", "cached", "cached", "forced"]
        # Step 0 computes both branches, so their cached residuals differ: so must the cached outputs.
        assert not torch.allclose(cached[2], cached[3])
    finally:
        remove_teacache(pipe)
