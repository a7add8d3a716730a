"""Cosmos 1.0 Diffusion, Cosmos-Predict2 and Cosmos-Predict2.5/Transfer2.5: CosmosTransformer3DModel.

Mirrors CosmosTransformer3DModel.forward of diffusers 0.42: the condition mask and the resized
padding mask concatenated to the latents, the attention mask, RoPE (scaled by fps for videos), the
learnable positional embedding (added inside every block), patchify, the timestep embedding (one
per sample, or per frame for [B, 1, T, 1, 1] timesteps), the cross-attention projection and image
context, ControlNet residuals every `controlnet_block_every_n` blocks, then the AdaLN-LoRA output
norm, projection and Cosmos' own unpatchify order.

The modulated input is the first block's norm1 output, LayerNorm(x) * (1 + scale) + shift with
(shift, scale) from the block's AdaLN-LoRA (SiLU -> linear_1 -> linear_2 of the embedded timestep,
plus temb), applied to the patchified latents before the learnable positional embedding, as
TeaCache4Cosmos takes it (adaln_norm_state of block0 on the blocks' input x).

Every Cosmos pipeline runs the conditional and the unconditional prediction as two calls per step
without cache_context; the hook gives the second call of each step its own state ("default#2").
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers import transformer_cosmos

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("CosmosTransformer3DModel")
def extract_cosmos_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor | tuple[torch.Tensor, torch.Tensor | None],
    block_controlnet_hidden_states: list[torch.Tensor] | None = None,
    attention_mask: torch.Tensor | None = None,
    fps: int | None = None,
    condition_mask: torch.Tensor | None = None,
    padding_mask: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    config = module.config
    # Per-frame timesteps hold the (tiny) conditioning t on conditioned frames: record the noisiest one.
    recorded_timestep = float(timestep.max()) if timestep.ndim == 5 else float(timestep.flatten()[0])
    batch_size, num_channels, num_frames, height, width = hidden_states.shape

    if condition_mask is not None:
        hidden_states = torch.cat([hidden_states, condition_mask], dim=1)

    if config.concat_padding_mask:
        transforms = getattr(transformer_cosmos, "transforms", None)
        if transforms is None:
            raise ImportError("CosmosTransformer3DModel resizes its padding mask with torchvision: install torchvision")
        padding_mask_resized = transforms.functional.resize(
            padding_mask, list(hidden_states.shape[-2:]), interpolation=transforms.InterpolationMode.NEAREST
        )
        hidden_states = torch.cat(
            [hidden_states, padding_mask_resized.unsqueeze(2).repeat(batch_size, 1, num_frames, 1, 1)], dim=1
        )

    if attention_mask is not None:
        attention_mask = attention_mask.unsqueeze(1).unsqueeze(1)  # [B, 1, 1, S]

    image_rotary_emb = module.rope(hidden_states, fps=fps)
    extra_pos_emb = module.learnable_pos_embed(hidden_states) if config.extra_pos_embed_type else None

    p_t, p_h, p_w = config.patch_size
    post_patch_num_frames = num_frames // p_t
    post_patch_height = height // p_h
    post_patch_width = width // p_w

    hidden_states = module.patch_embed(hidden_states)
    hidden_states = hidden_states.flatten(1, 3)  # [B, T, H, W, C] -> [B, THW, C]

    if timestep.ndim == 1:
        temb, embedded_timestep = module.time_embed(hidden_states, timestep)
    elif timestep.ndim == 5:
        assert timestep.shape == (batch_size, 1, num_frames, 1, 1), (
            f"Expected timestep to have shape [B, 1, T, 1, 1], but got {timestep.shape}"
        )
        timestep = timestep.flatten()
        temb, embedded_timestep = module.time_embed(hidden_states, timestep)
        # One embedding per frame, broadcast over that frame's tokens (p_t is 1).
        temb, embedded_timestep = (
            x.view(batch_size, post_patch_num_frames, 1, 1, -1)
            .expand(-1, -1, post_patch_height, post_patch_width, -1)
            .flatten(1, 3)
            for x in (temb, embedded_timestep)
        )
    else:
        raise ValueError(f"Expected timestep to have shape [B, 1, T, 1, 1] or [T], but got {timestep.shape}")

    text_context, img_context = (
        encoder_hidden_states if isinstance(encoder_hidden_states, tuple) else (encoder_hidden_states, None)
    )
    if config.use_crossattn_projection:
        text_context = module.crossattn_proj(text_context)
    if img_context is not None and config.img_context_dim_in:
        img_context = module.img_context_proj(img_context)
    processed_encoder_hidden_states = (
        (text_context, img_context) if isinstance(encoder_hidden_states, tuple) else text_context
    )

    controlnet_block_index_map = {}
    if block_controlnet_hidden_states is not None:
        n_blocks = len(module.transformer_blocks)
        controlnet_block_index_map = {
            block_idx: block_controlnet_hidden_states[idx]
            for idx, block_idx in enumerate(range(0, n_blocks, config.controlnet_block_every_n))
        }

    modulated_input, _ = module.transformer_blocks[0].norm1(hidden_states, embedded_timestep, temb)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image = hidden_states
        for block_idx, block in enumerate(module.transformer_blocks):
            args = (
                image,
                processed_encoder_hidden_states,
                embedded_timestep,
                temb,
                image_rotary_emb,
                extra_pos_emb,
                attention_mask,
                controlnet_block_index_map.get(block_idx),
            )
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                image = run_checkpointed(module, block, *args)
            else:
                image = block(*args)
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        output = module.norm_out(image, embedded_timestep, temb)
        output = module.proj_out(output)
        output = output.unflatten(2, (p_h, p_w, p_t, -1))
        output = output.unflatten(1, (post_patch_num_frames, post_patch_height, post_patch_width))
        # Not the inverse of the patch embedding's order, but what the forward does.
        output = output.permute(0, 7, 1, 6, 2, 4, 3, 5)
        output = output.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=temb,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
    )
