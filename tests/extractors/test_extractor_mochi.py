"""Fidelity of the Mochi extractor on a tiny MochiTransformer3DModel (the real diffusers class)."""

import pytest
import torch
from diffusers import MochiTransformer3DModel
from support import assert_cached_call_is_input_plus_residual, assert_caching_off_matches_unhooked

from teacli import get_extractor

# MochiRoPE asks for a float32 CPU autocast, which torch declines with a warning and runs as is.
pytestmark = pytest.mark.filterwarnings("ignore:In CPU autocast, but the target dtype is not supported")

TEXT_LEN, TEXT_DIM = 6, 24
FRAMES, SIZE = 2, 4  # latent frames and latent height/width: 2 x 2 x 2 = 8 video tokens


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = MochiTransformer3DModel(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,  # the second (last) block is context_pre_only
        pooled_projection_dim=16,
        in_channels=4,
        text_embed_dim=TEXT_DIM,  # attention-pooled with 8 heads
        time_embed_dim=16,
        max_sequence_length=TEXT_LEN,
    )
    # The checkpoint's RoPE frequencies are learned; zeros (the init) would make RoPE the identity.
    torch.nn.init.normal_(model.pos_frequencies, std=0.5)
    return model.eval()


def inputs(seed: int, timestep: float = 300.0, batch: int = 1, mask: list[list[int]] | None = None, **extra) -> dict:
    """Shaped as MochiPipeline passes them: latents (B, C, F, H, W), T5 embeddings, a boolean text mask,
    and reversed timesteps that rise from 0 to 1000 over a generation."""
    generator = torch.Generator().manual_seed(seed)
    mask = mask or [[1, 1, 1, 1, 0, 0]] * batch
    return dict(
        hidden_states=torch.randn(batch, 4, FRAMES, SIZE, SIZE, generator=generator),
        encoder_hidden_states=torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=generator),
        timestep=torch.full((batch,), timestep),
        encoder_attention_mask=torch.tensor(mask, dtype=torch.bool),
        **extra,
    )


def test_caching_off_equals_the_unhooked_forward_across_branches_and_steps(model):
    calls = [
        ("cond_uncond", inputs(1, 20.0, batch=2, return_dict=False)),
        ("cond", inputs(2, 20.0)),
        ("cond_uncond", inputs(3, 400.0, batch=2)),
        ("uncond", inputs(4, 400.0, return_dict=False)),
        ("cond_uncond", inputs(5, 900.0, batch=2, return_dict=False)),
        (None, inputs(6, 900.0)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_caching_off_with_an_empty_negative_prompt_mask_and_full_prompts(model):
    # force_zeros_for_empty_prompt gives the empty negative prompt an all-False mask.
    calls = [
        ("cond_uncond", inputs(7, 100.0, batch=2, mask=[[0] * TEXT_LEN, [1, 1, 1, 0, 0, 0]])),
        ("cond_uncond", inputs(8, 200.0, batch=2, mask=[[1] * TEXT_LEN] * 2, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_lora_scale_in_attention_kwargs_is_accepted_with_caching_off(model):
    calls = [
        ("cond_uncond", inputs(1, 100.0, batch=2, attention_kwargs={"scale": 0.5})),
        ("cond_uncond", inputs(2, 300.0, batch=2, attention_kwargs={"scale": 0.5}, return_dict=False)),
    ]
    assert_caching_off_matches_unhooked(model, calls)


def test_cached_call_is_input_plus_residual(model):
    first, second = inputs(1, 100.0, batch=2), inputs(2, 150.0, batch=2)
    (residual,) = assert_cached_call_is_input_plus_residual(model, first, second, "cond_uncond")
    assert residual.shape == (2, FRAMES * (SIZE // 2) ** 2, 32)  # video tokens only: the text stream is not cached
    assert_cached_call_is_input_plus_residual(model, inputs(3, 100.0), inputs(4, 150.0, return_dict=False))


@torch.no_grad()
def test_modulated_input_is_the_first_block_norm1_output_as_in_teacache4mochi(model):
    given = inputs(3, 250.0)
    context = get_extractor("MochiTransformer3DModel")(model, **given)
    temb, _ = model.time_embed(
        given["timestep"], given["encoder_hidden_states"], given["encoder_attention_mask"], hidden_dtype=torch.float32
    )
    assert torch.equal(context.temb, temb)
    latents = given["hidden_states"]
    patches = model.patch_embed(latents.permute(0, 2, 1, 3, 4).flatten(0, 1))
    video = patches.unflatten(0, (1, FRAMES)).flatten(1, 2)
    assert torch.equal(context.hidden_states, video)
    assert context.encoder_hidden_states is None
    norm1 = model.transformer_blocks[0].norm1
    scale_msa = norm1.linear(torch.nn.functional.silu(temb)).chunk(4, dim=1)[0]
    rms = torch.rsqrt(video.pow(2).mean(-1, keepdim=True) + norm1.norm.eps)
    expected = video * rms * (1 + scale_msa[:, None])
    torch.testing.assert_close(context.modulated_input, expected, rtol=0, atol=1e-6)
    assert context.timestep == pytest.approx(750.0)  # 1000 - t: the noise level falls over a generation


@torch.no_grad()
def test_cached_call_applies_norm_out_with_its_own_timestep(model):
    """teacli caches the blocks' residual and runs norm_out with the current temb; TeaCache4Mochi caches it
    after norm_out, which benchmarks/output_head.py measured further from the computed output."""
    from teacli.extractors.mochi import extract_mochi_context_residual_after_head as reference

    from teacli import TeaCacheConfig, apply_teacache

    first, second = inputs(1, 100.0), inputs(2, 300.0)
    with apply_teacache(model, TeaCacheConfig(thresh=1e9, coefficients=(1.0, 0.0))) as handle:
        model(**first)
        cached = model(**second, return_dict=False)[0]
        assert [str(r.decision) for r in handle.stats.records] == ["forced", "cached"]

    computed = get_extractor("MochiTransformer3DModel")(model, **first)
    (blocks_out,) = computed.run_transformer_blocks()
    reused = get_extractor("MochiTransformer3DModel")(model, **second)
    head_input = reused.hidden_states + (blocks_out - computed.hidden_states)
    video = model.proj_out(model.norm_out(head_input, reused.temb))  # the head at this call's timestep
    patches = video.reshape(1, FRAMES, SIZE // 2, SIZE // 2, 2, 2, -1).permute(0, 6, 1, 2, 4, 3, 5)
    assert torch.equal(cached, patches.reshape(1, -1, FRAMES, SIZE, SIZE))

    (after_head,) = reference(model, **first).run_transformer_blocks()
    reused_reference = reference(model, **second)
    reference_output = reused_reference.postprocess(head_input - blocks_out + after_head).sample
    assert not torch.allclose(reference_output, cached, atol=1e-3)  # the two rules really differ


def test_the_reference_head_variant_owes_the_same_two_proofs(model, monkeypatch):
    """extract_mochi_context_residual_after_head (the reference's output head,
    compared in benchmarks/output_head.py) is an extractor too: it owes the same proofs."""
    from teacli.extractors.mochi import extract_mochi_context_residual_after_head

    from teacli.engine.registry import EXTRACTOR_REGISTRY

    monkeypatch.setitem(EXTRACTOR_REGISTRY, "MochiTransformer3DModel", extract_mochi_context_residual_after_head)
    assert_caching_off_matches_unhooked(
        model,
        [
            ("cond_uncond", inputs(1, 20.0, batch=2, return_dict=False)),
            ("cond", inputs(2, 20.0)),
            (None, inputs(6, 900.0)),
        ],
    )
    assert_cached_call_is_input_plus_residual(
        model, inputs(1, 100.0, batch=2), inputs(2, 150.0, batch=2), "cond_uncond"
    )
