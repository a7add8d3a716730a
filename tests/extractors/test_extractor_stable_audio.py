"""Fidelity of the Stable Audio extractor on a tiny StableAudioDiTModel (the real diffusers class)."""

import pytest
import torch
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor

EXTRACTOR = "StableAudioDiTModel"
CHANNELS, LENGTH = 4, 12  # latent channels and length
HEAD_DIM = 8
STABLE_AUDIO_COEFFICIENTS = [121.7749, -153.7449, 68.0537, -12.2813, 1.0734]
TEXT, TEXT_DIM, GLOBAL_DIM = 5, 10, 12


# The pipeline's RoPE: half the head dim, over the latent length plus the global token.
ROTARY = get_1d_rotary_pos_embed(HEAD_DIM // 2, LENGTH + 1, use_real=True, repeat_interleave_real=False)


def make_stable_audio() -> torch.nn.Module:
    from diffusers import StableAudioDiTModel

    torch.manual_seed(0)
    model = StableAudioDiTModel(
        sample_size=LENGTH,
        in_channels=CHANNELS,
        num_layers=2,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=4,
        num_key_value_attention_heads=2,
        out_channels=CHANNELS,
        cross_attention_dim=16,
        time_proj_dim=8,
        global_states_input_dim=GLOBAL_DIM,
        cross_attention_input_dim=TEXT_DIM,
    )
    return model.eval()


@pytest.fixture(scope="module")
def stable_audio():
    return make_stable_audio()


def audio_inputs(seed: int, timestep: float = 0.8, batch: int = 2, **extra) -> dict:
    """As StableAudioPipeline passes them: CFG batched, one timestep (t.unsqueeze(0)), the pipeline's RoPE."""
    generator = torch.Generator().manual_seed(seed)
    inputs = dict(
        hidden_states=torch.randn(batch, CHANNELS, LENGTH, generator=generator),
        timestep=torch.tensor([timestep]),
        encoder_hidden_states=torch.randn(batch, TEXT, TEXT_DIM, generator=generator),
        global_hidden_states=torch.randn(batch, 1, GLOBAL_DIM, generator=generator),
        rotary_embedding=get_1d_rotary_pos_embed(
            HEAD_DIM // 2, LENGTH + 1, use_real=True, repeat_interleave_real=False
        ),
        return_dict=False,
    )
    return {**inputs, **extra}


def masks(batch: int = 2) -> dict:
    attention_mask = torch.ones(batch, LENGTH, dtype=torch.bool)
    attention_mask[:, -3:] = False
    encoder_attention_mask = torch.ones(batch, TEXT, dtype=torch.bool)
    encoder_attention_mask[0, -2:] = False
    return dict(attention_mask=attention_mask, encoder_attention_mask=encoder_attention_mask)


def test_caching_off_equals_the_unhooked_forward(stable_audio):
    calls = [
        (None, audio_inputs(1, 0.95)),
        (None, audio_inputs(2, 0.7, return_dict=True)),
        (None, audio_inputs(3, 0.4, **masks())),
        (None, audio_inputs(4, 0.1, return_dict=True, **masks())),
    ]
    assert_caching_off_matches_unhooked(stable_audio, calls)


def test_caching_off_without_cfg(stable_audio):
    calls = [(None, audio_inputs(5, 0.9, batch=1)), (None, audio_inputs(6, 0.5, batch=1, return_dict=True))]
    assert_caching_off_matches_unhooked(stable_audio, calls)


class _Pipe:
    def __init__(self, transformer, scheduler):
        self.transformer, self.scheduler = transformer, scheduler


def _denoise(pipe, steps: int) -> list[torch.Tensor]:
    """StableAudioPipeline's loop: CFG batched in one call, t.unsqueeze(0), the scheduler's own step."""
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps)
    latents = torch.randn(1, CHANNELS, LENGTH, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    conditions = audio_inputs(1)
    predictions = []
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        call = {**conditions, "hidden_states": model_input, "timestep": t.unsqueeze(0)}
        noise_pred = pipe.transformer(**call)[0]
        predictions.append(noise_pred)
        uncond, cond = noise_pred.chunk(2)
        latents = scheduler.step(uncond + 7.0 * (cond - uncond), t, latents).prev_sample
    return predictions


@torch.no_grad()
def test_pipeline_loop_with_a_dpm_solver_scheduler(stable_audio):
    from diffusers import EDMDPMSolverMultistepScheduler
    from diffusers.utils import is_torchsde_available

    from teacli import TeaCacheConfig, apply_teacache, remove_teacache

    if is_torchsde_available():
        from diffusers import CosineDPMSolverMultistepScheduler as Scheduler
    else:  # the pipeline's scheduler needs torchsde; its EDM DPM-Solver sibling keeps the same step bookkeeping
        Scheduler = EDMDPMSolverMultistepScheduler
    pipe = _Pipe(stable_audio, Scheduler())
    reference = _denoise(pipe, 4)
    handle = apply_teacache(pipe, TeaCacheConfig(thresh=0.0, coefficients=STABLE_AUDIO_COEFFICIENTS))
    try:
        for got, wanted in zip(_denoise(pipe, 4), reference):
            torch.testing.assert_close(got, wanted, rtol=1e-6, atol=1e-6)
    finally:
        remove_teacache(pipe)
    handle = apply_teacache(pipe, TeaCacheConfig(thresh=1e9, coefficients=STABLE_AUDIO_COEFFICIENTS))
    try:
        _denoise(pipe, 4)
        _denoise(pipe, 4)  # a second generation starts over: its first step is computed again
        records = handle.stats.records
        assert {r.branch for r in records} == {"default"}
        assert [str(r.decision) for r in records] == ["forced", "cached", "cached", "forced"] * 2
        assert [r.step for r in records] == [0, 1, 2, 3] * 2
        assert records[0].timestep > records[1].timestep > records[2].timestep > records[3].timestep
    finally:
        remove_teacache(pipe)


def test_cached_call_is_input_plus_residual(stable_audio):
    (residual,) = assert_cached_call_is_input_plus_residual(stable_audio, audio_inputs(1, 0.9), audio_inputs(2, 0.8))
    assert residual.shape == (2, 1 + LENGTH, 32)  # the global token is part of the cached sequence
    assert_cached_call_is_input_plus_residual(
        stable_audio, audio_inputs(1, 0.9, **masks()), audio_inputs(2, 0.8, return_dict=True, **masks())
    )


@torch.no_grad()
def test_modulated_input_is_the_first_block_norm1_of_the_sequence_with_the_global_token(stable_audio):
    inputs = audio_inputs(3, 0.6)
    context = get_extractor(EXTRACTOR)(stable_audio, **inputs)
    model = stable_audio
    time = model.timestep_proj(model.time_proj(inputs["timestep"]))
    global_token = model.global_proj(inputs["global_hidden_states"]) + time.unsqueeze(1)
    latents = inputs["hidden_states"]
    sequence = torch.cat([global_token, model.proj_in((model.preprocess_conv(latents) + latents).transpose(1, 2))], 1)
    assert torch.equal(context.hidden_states, sequence)
    assert torch.equal(context.modulated_input, model.transformer_blocks[0].norm1(sequence))
    assert context.timestep == pytest.approx(0.6)
    # the timestep reaches the decision only through the global token
    later = get_extractor(EXTRACTOR)(stable_audio, **audio_inputs(3, 0.5))
    assert torch.equal(later.modulated_input[:, 1:], context.modulated_input[:, 1:])
    assert not torch.equal(later.modulated_input[:, :1], context.modulated_input[:, :1])
