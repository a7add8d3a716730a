"""SkyReels-V2 (T2V, I2V and Diffusion Forcing, 1.3B/14B, 540P/720P): SkyReelsV2Transformer3DModel.

Mirrors SkyReelsV2Transformer3DModel.forward of diffusers 0.42: the 3-axis rotary embedding, the
Conv3d patch embedding, the block-causal mask when num_frame_per_block > 1, the time/text(/CLIP
image) condition embedder, the fps projection added to the modulation (inject_sample_info), the
per-frame embeddings of Diffusion Forcing (enable_diffusion_forcing, timestep (B, F)), the block
loop, then norm_out modulated by scale_shift_table and temb, proj_out and unpatchify. The LoRA
scale in attention_kwargs is applied by the hook; the forward passes nothing else from it.

SkyReels-V2 is Wan 2.1's architecture, and its own TeaCache (SkyworkAI/SkyReels-V2
skyreels_v2_infer/modules/transformer.py, initialize_teacache) measures what TeaCache4Wan2.1 does:
- default (time-embedding mode): `temb`, the time embedder's output (`e`);
- `time_projection` (ret-steps mode, `modulated_input: time_projection` with `ret_steps: 5` in a
  preset): `timestep_proj`, the six modulation vectors every block reads, fps projection included
  (`e0`).
With Diffusion Forcing both are the per-token tensors, as the reference takes them after expanding.

The T2V, I2V and DF pipelines wrap each call in cache_context("cond"/"uncond").
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("SkyReelsV2Transformer3DModel", lora_kwargs="attention_kwargs")
def extract_skyreels_v2_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_image: torch.Tensor | None = None,
    enable_diffusion_forcing: bool = False,
    fps: torch.Tensor | list[int] | None = None,
    return_dict: bool = True,
    attention_kwargs: dict[str, Any] | None = None,  # only its LoRA `scale`, applied by the hook
) -> CacheContext:
    config = module.config
    # Diffusion Forcing's per-frame timesteps are lower on clean (conditioning) frames: record the noisiest.
    recorded_timestep = float(timestep.flatten().max())
    batch_size, num_channels, num_frames, height, width = hidden_states.shape
    p_t, p_h, p_w = config.patch_size
    post_patch_num_frames = num_frames // p_t
    post_patch_height = height // p_h
    post_patch_width = width // p_w

    rotary_emb = module.rope(hidden_states)

    hidden_states = module.patch_embedding(hidden_states)
    hidden_states = hidden_states.flatten(2).transpose(1, 2)

    causal_mask = None
    if config.num_frame_per_block > 1:
        block_num = post_patch_num_frames // config.num_frame_per_block
        range_tensor = torch.arange(block_num, device=hidden_states.device).repeat_interleave(
            config.num_frame_per_block
        )
        causal_mask = range_tensor.unsqueeze(0) <= range_tensor.unsqueeze(1)  # f, f
        causal_mask = causal_mask.view(post_patch_num_frames, 1, 1, post_patch_num_frames, 1, 1)
        causal_mask = causal_mask.repeat(1, post_patch_height, post_patch_width, 1, post_patch_height, post_patch_width)
        tokens = post_patch_num_frames * post_patch_height * post_patch_width
        causal_mask = causal_mask.reshape(tokens, tokens).unsqueeze(0).unsqueeze(0)

    temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = module.condition_embedder(
        timestep, encoder_hidden_states, encoder_hidden_states_image
    )
    timestep_proj = timestep_proj.unflatten(-1, (6, -1))

    if encoder_hidden_states_image is not None:
        encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)

    if config.inject_sample_info:
        fps = torch.tensor(fps, dtype=torch.long, device=hidden_states.device)
        fps_emb = module.fps_embedding(fps)
        if enable_diffusion_forcing:
            timestep_proj = timestep_proj + module.fps_projection(fps_emb).unflatten(1, (6, -1)).repeat(
                timestep.shape[1], 1, 1
            )
        else:
            timestep_proj = timestep_proj + module.fps_projection(fps_emb).unflatten(1, (6, -1))

    if enable_diffusion_forcing:
        b, f = timestep.shape
        temb = temb.view(b, f, 1, 1, -1)
        timestep_proj = timestep_proj.view(b, f, 1, 1, 6, -1)
        temb = temb.repeat(1, 1, post_patch_height, post_patch_width, 1).flatten(1, 3)
        timestep_proj = timestep_proj.repeat(1, 1, post_patch_height, post_patch_width, 1, 1).flatten(1, 3)
        timestep_proj = timestep_proj.transpose(1, 2).contiguous()  # (b, 6, f * pp_h * pp_w, inner_dim)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image = hidden_states
        if torch.is_grad_enabled() and module.gradient_checkpointing:
            for block in module.blocks:
                image = run_checkpointed(
                    module, block, image, encoder_hidden_states, timestep_proj, rotary_emb, causal_mask
                )
        else:
            for block in module.blocks:
                image = block(image, encoder_hidden_states, timestep_proj, rotary_emb, causal_mask)
        # The text stream only feeds cross-attention: the video residual is all a cached call needs.
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        if temb.dim() == 2:  # one time embedding per sample
            shift, scale = (module.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        elif temb.dim() == 3:  # Diffusion Forcing: one per token
            shift, scale = (module.scale_shift_table.unsqueeze(2) + temb.unsqueeze(1)).chunk(2, dim=1)
            shift, scale = shift.squeeze(1), scale.squeeze(1)
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
