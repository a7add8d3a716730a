"""Fidelity of the SkyReels-V2 extractor on tiny SkyReelsV2Transformer3DModels (the real diffusers class):
T2V, I2V with CLIP image embeddings, Diffusion Forcing (per-frame timesteps, fps, block-causal mask), and
ret-steps mode's time projection."""

import pytest
import torch
from support import COEFFICIENTS, assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import TeaCacheConfig, apply_teacache, get_extractor, remove_teacache

EXTRACTOR = "SkyReelsV2Transformer3DModel"
CHANNELS = 4
FRAMES, HEIGHT, WIDTH = 2, 4, 4  # latent grid; 2x2 patches -> 8 tokens
TOKENS = FRAMES * (HEIGHT // 2) * (WIDTH // 2)
TEXT_DIM, TEXT = 16, 6
I2V_TEXT = 512  # the attention processor splits off the image tokens assuming 512 text tokens
IMAGE_TOKENS, IMAGE_DIM = 4, 8
INNER = 24  # 2 heads of 12


def make_skyreels(**config) -> torch.nn.Module:
    from diffusers import SkyReelsV2Transformer3DModel

    torch.manual_seed(0)
    defaults = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    )
    return SkyReelsV2Transformer3DModel(**{**defaults, **config}).eval()


@pytest.fixture(scope="module")
def skyreels():
    return make_skyreels()


def t2v_inputs(seed: int, timestep: float = 700.0, **extra) -> dict:
    """As SkyReelsV2Pipeline passes them."""
    generator = torch.Generator().manual_seed(seed)
    inputs = dict(
        hidden_states=torch.randn(1, CHANNELS, FRAMES, HEIGHT, WIDTH, generator=generator),
        timestep=torch.full((1,), timestep),
        encoder_hidden_states=torch.randn(1, TEXT, TEXT_DIM, generator=generator),
        attention_kwargs=None,
        return_dict=False,
    )
    return {**inputs, **extra}


def i2v_inputs(seed: int, timestep: float = 700.0, **extra) -> dict:
    """SkyReelsV2ImageToVideoPipeline's call: 512 text tokens and the CLIP image embeddings."""
    generator = torch.Generator().manual_seed(100 + seed)
    return t2v_inputs(
        seed,
        timestep,
        encoder_hidden_states=torch.randn(1, I2V_TEXT, TEXT_DIM, generator=generator),
        encoder_hidden_states_image=torch.randn(1, IMAGE_TOKENS, IMAGE_DIM, generator=generator),
        **extra,
    )


def df_inputs(seed: int, timestep: float = 700.0, **extra) -> dict:
    """SkyReelsV2DiffusionForcingPipeline's call: per-frame timesteps (the first frame a noised condition)."""
    timesteps = torch.full((1, FRAMES), timestep)
    timesteps[:, 0] = 20.0
    inputs = t2v_inputs(seed, enable_diffusion_forcing=True, fps=[1])
    return {**inputs, "timestep": timesteps, **extra}


def test_caching_off_equals_the_unhooked_forward_t2v(skyreels):
    calls = [
        ("cond", t2v_inputs(1, 900.0)),
        ("uncond", t2v_inputs(2, 900.0, return_dict=True)),
        ("cond", t2v_inputs(3, 500.0)),
        ("uncond", t2v_inputs(4, 500.0)),
        ("cond", t2v_inputs(5, 100.0, return_dict=True)),
    ]
    assert_caching_off_matches_unhooked(skyreels, calls)


def test_caching_off_equals_the_unhooked_forward_i2v():
    model = make_skyreels(image_dim=IMAGE_DIM, added_kv_proj_dim=INNER, in_channels=2 * CHANNELS + 4)
    generator = torch.Generator().manual_seed(9)
    condition = torch.randn(1, CHANNELS + 4, FRAMES, HEIGHT, WIDTH, generator=generator)

    def inputs(seed, t, **extra):
        call = i2v_inputs(seed, t, **extra)
        call["hidden_states"] = torch.cat([call["hidden_states"], condition], dim=1)  # as the pipeline concatenates
        return call

    calls = [("cond", inputs(1, 900.0)), ("uncond", inputs(2, 900.0, return_dict=True)), ("cond", inputs(3, 400.0))]
    assert_caching_off_matches_unhooked(model, calls)
    assert_cached_call_is_input_plus_residual(model, inputs(1, 900.0), inputs(2, 800.0), "cond")


def test_caching_off_equals_the_unhooked_forward_diffusion_forcing():
    model = make_skyreels(inject_sample_info=True, num_frame_per_block=2)  # block-causal mask, fps projection
    calls = [
        ("cond", df_inputs(1, 900.0)),
        ("uncond", df_inputs(2, 900.0, return_dict=True)),
        ("cond", df_inputs(3, 500.0, fps=[0])),
    ]
    assert_caching_off_matches_unhooked(model, calls)
    (residual,) = assert_cached_call_is_input_plus_residual(model, df_inputs(1, 900.0), df_inputs(2, 800.0), "cond")
    assert residual.shape == (1, TOKENS, INNER)


def test_cached_call_is_input_plus_residual(skyreels):
    (residual,) = assert_cached_call_is_input_plus_residual(skyreels, t2v_inputs(1, 900.0), t2v_inputs(2, 800.0))
    assert residual.shape == (1, TOKENS, INNER)
    assert_cached_call_is_input_plus_residual(skyreels, t2v_inputs(1, 900.0), t2v_inputs(2, 800.0), "uncond")


@torch.no_grad()
def test_modulated_inputs_are_the_time_embedding_and_the_time_projection(skyreels):
    inputs = t2v_inputs(3, 600.0)
    context = get_extractor(EXTRACTOR)(skyreels, **inputs)
    embedder = skyreels.condition_embedder
    temb = embedder.time_embedder(embedder.timesteps_proj(inputs["timestep"]).float())
    torch.testing.assert_close(context.modulated_input, temb, rtol=0, atol=0)
    projection = embedder.time_proj(torch.nn.functional.silu(temb)).unflatten(1, (6, -1))
    torch.testing.assert_close(context.select_modulated_input("time_projection"), projection, rtol=0, atol=0)
    assert context.timestep == pytest.approx(600.0)

    # Diffusion Forcing: the per-token tensors, fps projection included, as the blocks read them.
    model = make_skyreels(inject_sample_info=True)
    df = df_inputs(4, 600.0)
    context = get_extractor(EXTRACTOR)(model, **df)
    assert context.modulated_input.shape == (1, TOKENS, INNER)
    assert context.select_modulated_input("time_projection").shape == (1, 6, TOKENS, INNER)
    assert context.timestep == pytest.approx(600.0)  # the noisiest frame, not the conditioning one


@torch.no_grad()
def test_ret_steps_mode_measures_the_time_projection(skyreels):
    """With `modulated_input: time_projection` the recorded distance is the time projection's."""
    config = TeaCacheConfig(thresh=0.0, coefficients=COEFFICIENTS, modulated_input="time_projection")
    handle = apply_teacache(skyreels, config)
    try:
        first, second = t2v_inputs(1, 900.0), t2v_inputs(2, 700.0)
        for inputs in (first, second):
            with skyreels.cache_context("cond"):
                skyreels(**inputs)
        extractor = get_extractor(EXTRACTOR)
        a = extractor(skyreels, **first).select_modulated_input("time_projection")
        b = extractor(skyreels, **second).select_modulated_input("time_projection")
        expected = ((b - a).abs().mean() / a.abs().mean()).item()
        assert handle.stats.records[1].rel_l1 == pytest.approx(expected, rel=1e-5)
    finally:
        remove_teacache(skyreels)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(skyreels):
    calls = [
        ("cond", t2v_inputs(1, 900.0, attention_kwargs={"scale": 0.5})),
        ("uncond", t2v_inputs(2, 600.0, attention_kwargs={"scale": 0.5}, return_dict=True)),
        ("cond", t2v_inputs(3, 300.0, attention_kwargs={"scale": 0.5})),
    ]
    assert_caching_off_matches_unhooked(skyreels, calls)
    assert calls[0][1]["attention_kwargs"] == {"scale": 0.5}  # the caller's dict is left as it was
