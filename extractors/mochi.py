"""Mochi 1 (genmo/mochi-1-preview): MochiTransformer3DModel.

Mirrors MochiTransformer3DModel.forward of diffusers 0.42: the combined timestep and caption
embedding (attention-pooled with encoder_attention_mask), the per-frame 2D patch embedding, the 3D
RoPE from the learned pos_frequencies, the block loop with the text mask (the last block is
context_pre_only: it reads the text stream but returns it unchanged), then norm_out, proj_out and
unpatchify. attention_kwargs carries only the LoRA scale (the forward passes nothing else on).

The modulated input is the first block's norm1 output (RMS norm of the video tokens times
1 + scale_msa), as ali-vilab/TeaCache's TeaCache4Mochi measures it. The output head reads only the
video stream, so only its residual is cached. Unlike TeaCache4Mochi, which caches the residual after
norm_out (so a cached call keeps the computed call's modulation), a cached call here runs norm_out with its
own temb: on a tiny Mochi driven through MochiPipeline's schedule its cached calls are closer to the
computed output (0.148 against 0.160 relative L1) and its results about 1 dB closer to uncached
(benchmarks/output_head.py, docs/benchmarks.md). `extract_mochi_context_residual_after_head` is the
reference's way, for that comparison.

MochiPipeline batches the negative and positive prompts into one call under
cache_context("cond_uncond"). Its timesteps are reversed (they rise from 0 to 1000 over a
generation); the record keeps 1000 - t, as the pipeline's own current_timestep does.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("MochiTransformer3DModel", lora_kwargs="attention_kwargs")
def extract_mochi_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.LongTensor,
    encoder_attention_mask: torch.Tensor,
    attention_kwargs: dict[str, Any] | None = None,  # only its LoRA `scale`, applied by the hook
    return_dict: bool = True,
    *,
    residual_after_head: bool = False,
) -> CacheContext:
    batch_size, num_channels, num_frames, height, width = hidden_states.shape
    recorded_timestep = 1000.0 - float(timestep.flatten()[0])
    p = module.config.patch_size
    post_patch_height = height // p
    post_patch_width = width // p

    temb, encoder_hidden_states = module.time_embed(
        timestep, encoder_hidden_states, encoder_attention_mask, hidden_dtype=hidden_states.dtype
    )

    hidden_states = hidden_states.permute(0, 2, 1, 3, 4).flatten(0, 1)
    hidden_states = module.patch_embed(hidden_states)
    hidden_states = hidden_states.unflatten(0, (batch_size, -1)).flatten(1, 2)

    image_rotary_emb = module.rope(
        module.pos_frequencies,
        num_frames,
        post_patch_height,
        post_patch_width,
        device=hidden_states.device,
        dtype=torch.float32,
    )

    modulated_input, *_ = module.transformer_blocks[0].norm1(hidden_states, temb)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = hidden_states, encoder_hidden_states
        for block in module.transformer_blocks:
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                image, text = run_checkpointed(
                    module, block, image, text, temb, encoder_attention_mask, image_rotary_emb
                )
            else:
                image, text = block(
                    hidden_states=image,
                    encoder_hidden_states=text,
                    temb=temb,
                    encoder_attention_mask=encoder_attention_mask,
                    image_rotary_emb=image_rotary_emb,
                )
        # The text stream after the last block feeds nothing: only the video residual is cached.
        return (module.norm_out(image, temb),) if residual_after_head else (image,)

    def postprocess(image: torch.Tensor) -> Any:
        if not residual_after_head:
            image = module.norm_out(image, temb)
        image = module.proj_out(image)
        image = image.reshape(batch_size, num_frames, post_patch_height, post_patch_width, p, p, -1)
        image = image.permute(0, 6, 1, 2, 4, 3, 5)
        output = image.reshape(batch_size, -1, num_frames, height, width)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=temb,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
    )


# TeaCache4Mochi's way, kept for comparison (benchmarks/output_head.py): the cached residual includes
# norm_out (modulated by the computed call's temb). Not registered.
extract_mochi_context_residual_after_head = partial(extract_mochi_context, residual_after_head=True)
