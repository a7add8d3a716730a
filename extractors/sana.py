"""Sana, Sana 1.5 and SANA-Sprint: SanaTransformer2DModel.

Mirrors SanaTransformer2DModel.forward of diffusers 0.42, including the self- and cross-attention
masks (given as 0/1 masks or as biases), the guidance embedding of SANA-Sprint, ControlNet block
residuals and the LoRA scale carried in attention_kwargs (the forward passes nothing else from it).

Sana is single-stream: text enters through cross-attention only. The modulated input is the first
block's norm1 output modulated as that block does it: LayerNorm(x) * (1 + scale_msa) + shift_msa,
with (shift_msa, scale_msa) from the block's scale_shift_table plus the AdaLayerNormSingle (or
Sprint's timestep+guidance) projection of the timestep embedding.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.onload import own_tensor
from teacli.engine.registry import extractor_for


@extractor_for("SanaTransformer2DModel", lora_kwargs="attention_kwargs")
def extract_sana_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    guidance: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    controlnet_block_samples: tuple[torch.Tensor] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    # 0/1 masks become additive biases with a singleton query dimension, as in the forward.
    if attention_mask is not None and attention_mask.ndim == 2:
        attention_mask = (1 - attention_mask.to(hidden_states.dtype)) * -10000.0
        attention_mask = attention_mask.unsqueeze(1)
    if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
        encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
        encoder_attention_mask = encoder_attention_mask.unsqueeze(1)

    batch_size, _, height, width = hidden_states.shape
    p = module.config.patch_size
    post_patch_height, post_patch_width = height // p, width // p

    hidden_states = module.patch_embed(hidden_states)

    if guidance is not None:
        timestep, embedded_timestep = module.time_embed(timestep, guidance=guidance, hidden_dtype=hidden_states.dtype)
    else:
        timestep, embedded_timestep = module.time_embed(
            timestep, batch_size=batch_size, hidden_dtype=hidden_states.dtype
        )

    encoder_hidden_states = module.caption_projection(encoder_hidden_states)
    encoder_hidden_states = encoder_hidden_states.view(batch_size, -1, hidden_states.shape[-1])
    encoder_hidden_states = module.caption_norm(encoder_hidden_states)

    modulated_input = _first_block_modulated_input(module.transformer_blocks[0], hidden_states, timestep)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image = hidden_states
        checkpointing = torch.is_grad_enabled() and module.gradient_checkpointing
        for index, block in enumerate(module.transformer_blocks):
            args = (
                image,
                attention_mask,
                encoder_hidden_states,
                encoder_attention_mask,
                timestep,
                post_patch_height,
                post_patch_width,
            )
            image = run_checkpointed(module, block, *args) if checkpointing else block(*args)
            if controlnet_block_samples is not None and 0 < index <= len(controlnet_block_samples):
                image = image + controlnet_block_samples[index - 1]
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        image = module.norm_out(image, embedded_timestep, module.scale_shift_table)
        image = module.proj_out(image)
        image = image.reshape(batch_size, post_patch_height, post_patch_width, p, p, -1)
        image = image.permute(0, 5, 1, 3, 2, 4)
        output = image.reshape(batch_size, -1, post_patch_height * p, post_patch_width * p)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=timestep,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
    )


def _first_block_modulated_input(block: torch.nn.Module, hidden_states: torch.Tensor, temb: torch.Tensor):
    """SanaTransformerBlock step 1-2: norm1(x) * (1 + scale_msa) + shift_msa, cast back as the block does."""
    table = own_tensor(block, "scale_shift_table", temb.device)  # read outside the block's forward
    shift_msa, scale_msa = (table[None] + temb.reshape(hidden_states.shape[0], 6, -1)).chunk(6, dim=1)[:2]
    modulated = block.norm1(hidden_states) * (1 + scale_msa) + shift_msa
    return modulated.to(hidden_states.dtype)
