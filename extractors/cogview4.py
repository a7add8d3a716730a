"""CogView4 (THUDM/CogView4-6B and its Control variant): CogView4Transformer2DModel.

Mirrors CogView4Transformer2DModel.forward of diffusers 0.42, including the SDXL-style
original_size/target_size/crop_coords conditioning, the text attention mask, precomputed
image_rotary_emb and the LoRA scale carried in attention_kwargs. The modulated input is the image
half of the first block's norm1 (CogView4AdaLayerNormZero) output: LayerNorm(image) * (1 + scale_msa)
+ shift_msa, the counterpart of TeaCache4FLUX's choice for this MMDiT.

The blocks update both streams, but the output head (norm_out, proj_out, unpatchify) reads only
the image stream, so only the image residual is cached.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("CogView4Transformer2DModel", lora_kwargs="attention_kwargs")
def extract_cogview4_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    original_size: torch.Tensor,
    target_size: torch.Tensor,
    crop_coords: torch.Tensor,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
    attention_mask: torch.Tensor | None = None,
    image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    batch_size, _, height, width = hidden_states.shape

    if image_rotary_emb is None:
        image_rotary_emb = module.rope(hidden_states)

    p = module.config.patch_size
    post_patch_height = height // p
    post_patch_width = width // p

    hidden_states, encoder_hidden_states = module.patch_embed(hidden_states, encoder_hidden_states)

    temb = module.time_condition_embed(timestep, original_size, target_size, crop_coords, hidden_states.dtype)
    temb = F.silu(temb)

    modulated_input = module.transformer_blocks[0].norm1(hidden_states, encoder_hidden_states, temb)[0]

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = hidden_states, encoder_hidden_states
        for block in module.transformer_blocks:
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                image, text = run_checkpointed(
                    module, block, image, text, temb, image_rotary_emb, attention_mask, attention_kwargs
                )
            else:
                image, text = block(image, text, temb, image_rotary_emb, attention_mask, attention_kwargs)
        # The text stream after the last block feeds nothing, so only the image residual is cached.
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        image = module.proj_out(module.norm_out(image, temb))
        image = image.reshape(batch_size, post_patch_height, post_patch_width, -1, p, p)
        output = image.permute(0, 3, 1, 4, 2, 5).flatten(4, 5).flatten(2, 3)
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
