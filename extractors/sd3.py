"""Stable Diffusion 3 / 3.5 (3 Medium, 3.5 Medium, 3.5 Large, 3.5 Large Turbo): SD3Transformer2DModel.

Mirrors SD3Transformer2DModel.forward of diffusers 0.42, including ControlNet residuals
(block_controlnet_hidden_states), IP-Adapter embeddings and the LoRA scale carried in
joint_attention_kwargs, skip_layers (skip-layer guidance), the dual-attention blocks of SD3.5 Medium
and the last block's context_pre_only. The modulated input is the first joint block's norm1 output for
the image stream (AdaLayerNormZero, or SD35AdaLayerNormZeroX on dual-attention blocks), as in
TeaCache4FLUX and PaddleMIX's TeaCache for SD3; it is taken even when skip_layers skips block 0.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("SD3Transformer2DModel", lora_kwargs="joint_attention_kwargs")
def extract_sd3_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    pooled_projections: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    block_controlnet_hidden_states: list[torch.Tensor] | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
    skip_layers: list[int] | None = None,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    height, width = hidden_states.shape[-2:]

    hidden_states = module.pos_embed(hidden_states)
    # PatchEmbed returns a non-contiguous view; the forward makes it contiguous, so do we.
    hidden_states = hidden_states.contiguous()
    temb = module.time_text_embed(timestep, pooled_projections)
    encoder_hidden_states = module.context_embedder(encoder_hidden_states)

    if joint_attention_kwargs is not None and "ip_adapter_image_embeds" in joint_attention_kwargs:
        # The forward pops from its own copy (apply_lora_scale copies the dict); never touch the caller's.
        joint_attention_kwargs = dict(joint_attention_kwargs)
        ip_adapter_image_embeds = joint_attention_kwargs.pop("ip_adapter_image_embeds")
        ip_hidden_states, ip_temb = module.image_proj(ip_adapter_image_embeds, timestep)
        joint_attention_kwargs.update(ip_hidden_states=ip_hidden_states, temb=ip_temb)

    modulated_input, *_ = module.transformer_blocks[0].norm1(hidden_states, emb=temb)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = hidden_states, encoder_hidden_states
        for index, block in enumerate(module.transformer_blocks):
            is_skip = skip_layers is not None and index in skip_layers
            if torch.is_grad_enabled() and module.gradient_checkpointing and not is_skip:
                text, image = run_checkpointed(module, block, image, text, temb, joint_attention_kwargs)
            elif not is_skip:
                text, image = block(
                    hidden_states=image,
                    encoder_hidden_states=text,
                    temb=temb,
                    joint_attention_kwargs=joint_attention_kwargs,
                )
            # Added after skipped blocks too, and never after the context_pre_only one, as upstream.
            if block_controlnet_hidden_states is not None and block.context_pre_only is False:
                interval = len(module.transformer_blocks) / len(block_controlnet_hidden_states)
                image = image + block_controlnet_hidden_states[int(index / interval)]
        # The last block is context_pre_only (its text output is None): only the image stream is cached.
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        image = module.proj_out(module.norm_out(image, temb))
        patch_size = module.config.patch_size
        rows, cols = height // patch_size, width // patch_size
        image = image.reshape(shape=(image.shape[0], rows, cols, patch_size, patch_size, module.out_channels))
        image = torch.einsum("nhwpqc->nchpwq", image)
        output = image.reshape(shape=(image.shape[0], module.out_channels, rows * patch_size, cols * patch_size))
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
