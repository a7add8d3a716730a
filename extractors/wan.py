"""Wan 2.1 (T2V 1.3B/14B, I2V 480P/720P) and Wan 2.2 (T2V/I2V A14B, TI2V 5B): WanTransformer3DModel.

Mirrors WanTransformer3DModel.forward of diffusers 0.42: the 3-axis rotary embedding, the Conv3d
patch embedding, the time/text(/CLIP image) condition embedder with a timestep of shape (B,) or,
for Wan 2.2 TI2V, (B, seq) per token, the image tokens put before the text tokens for I2V, the
block loop, then norm_out modulated by scale_shift_table and temb, proj_out and unpatchify.

Two modulated inputs, as TeaCache4Wan2.1 (ali-vilab/TeaCache teacache_generate.py) measures them:
- default (time-embedding mode): `temb`, the time embedder's output (`e` in the reference, which
  takes `modulated_inp = e` unless use_ret_steps);
- `time_projection` (ret-steps mode, a preset's `modulated_input: time_projection` with
  `ret_steps: 5`): `timestep_proj`, the six modulation vectors every block reads (`e0`).
Both depend only on the timestep, so cond and uncond calls of one step see the same distance.

WanPipeline wraps each call in cache_context("cond"/"uncond") with step_index and
num_inference_steps (counted over both Wan 2.2 experts); WanImageToVideoPipeline names the branch
only, and the hook reads the step from the scheduler.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("WanTransformer3DModel", lora_kwargs="attention_kwargs")
def extract_wan_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_image: torch.Tensor | None = None,
    return_dict: bool = True,
    attention_kwargs: dict[str, Any] | None = None,  # only its LoRA `scale`, applied by the hook
) -> CacheContext:
    # TI2V's per-token timesteps are 0 on clean (conditioning) tokens: the noisy tokens' value is the max.
    recorded_timestep = float(timestep.flatten().max())
    batch_size, _, num_frames, height, width = hidden_states.shape
    p_t, p_h, p_w = module.config.patch_size
    post_patch_num_frames = num_frames // p_t
    post_patch_height = height // p_h
    post_patch_width = width // p_w

    rotary_emb = module.rope(hidden_states)

    hidden_states = module.patch_embedding(hidden_states)
    hidden_states = hidden_states.flatten(2).transpose(1, 2).contiguous()

    if timestep.ndim == 2:  # (batch, seq): Wan 2.2 TI2V
        ts_seq_len = timestep.shape[1]
        timestep = timestep.flatten()
    else:
        ts_seq_len = None

    temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = module.condition_embedder(
        timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=ts_seq_len
    )
    if ts_seq_len is not None:
        timestep_proj = timestep_proj.unflatten(2, (6, -1))  # batch, seq, 6, inner_dim
    else:
        timestep_proj = timestep_proj.unflatten(1, (6, -1))  # batch, 6, inner_dim

    if encoder_hidden_states_image is not None:
        encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image = hidden_states
        if torch.is_grad_enabled() and module.gradient_checkpointing:
            for block in module.blocks:
                image = run_checkpointed(module, block, image, encoder_hidden_states, timestep_proj, rotary_emb)
        else:
            for block in module.blocks:
                image = block(image, encoder_hidden_states, timestep_proj, rotary_emb)
        # The text stream is an input of every block, never an output: only the video residual is cached.
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        if temb.ndim == 3:  # batch, seq, inner_dim (TI2V)
            shift, scale = (module.scale_shift_table.unsqueeze(0).to(temb.device) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (module.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        shift, scale = shift.to(image.device), scale.to(image.device)

        image = (module.norm_out(image.float()) * (1 + scale) + shift).type_as(image)
        image = module.proj_out(image)
        image = image.reshape(batch_size, post_patch_num_frames, post_patch_height, post_patch_width, p_t, p_h, p_w, -1)
        image = image.permute(0, 7, 1, 4, 2, 5, 3, 6)
        output = image.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    return CacheContext(
        modulated_input=temb,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=temb,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
        modulated_alternatives={"time_projection": timestep_proj},
    )
