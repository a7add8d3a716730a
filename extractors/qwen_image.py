"""Qwen-Image family: QwenImageTransformer2DModel.

Covers Qwen-Image, Qwen-Image-Edit, Qwen-Image-Edit-2509/2511 (zero_cond_t) and Qwen-Image-Layered
(additional_t_cond, layer-3D RoPE). Mirrors QwenImageTransformer2DModel.forward of diffusers 0.42.1:
text mask normalisation, guidance, per-token modulation index (zero_cond_t), ControlNet residuals and
the LoRA scale carried in attention_kwargs. The modulated input is the first block's image stream
after img_norm1 and the img_mod shift/scale (what it feeds to attention), as in vllm-omni's Qwen-Image
extractor. Only the image stream is cached: the output head reads nothing from the text stream.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np
import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_qwenimage import compute_text_seq_len_from_mask

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("QwenImageTransformer2DModel", lora_kwargs="attention_kwargs")
def extract_qwen_image_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_hidden_states_mask: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_shapes: list[list[tuple[int, int, int]]] | None = None,
    guidance: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    controlnet_block_samples: list[torch.Tensor] | None = None,
    additional_t_cond: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    hidden_states = module.img_in(hidden_states)

    timestep = timestep.to(hidden_states.dtype)
    if module.zero_cond_t:
        # Edit-2511: the target image tokens get the real timestep, the condition images timestep 0.
        timestep = torch.cat([timestep, timestep * 0], dim=0)
        modulate_index = torch.tensor(
            [[0] * prod(sample[0]) + [1] * sum([prod(s) for s in sample[1:]]) for sample in img_shapes],
            device=timestep.device,
            dtype=torch.int,
        )
    else:
        modulate_index = None

    encoder_hidden_states = module.txt_in(module.txt_norm(encoder_hidden_states))
    text_seq_len, _, encoder_hidden_states_mask = compute_text_seq_len_from_mask(
        encoder_hidden_states, encoder_hidden_states_mask
    )

    if guidance is not None:
        guidance = guidance.to(hidden_states.dtype) * 1000
    # Upstream passes guidance positionally into an embedder that takes none; mirrored as is.
    temb = (
        module.time_text_embed(timestep, hidden_states, additional_t_cond)
        if guidance is None
        else module.time_text_embed(timestep, guidance, hidden_states, additional_t_cond)
    )

    image_rotary_emb = module.pos_embed(img_shapes, max_txt_seq_len=text_seq_len, device=hidden_states.device)

    first = module.transformer_blocks[0]
    img_mod1, _ = first.img_mod(temb).chunk(2, dim=-1)
    modulated_input, _ = first._modulate(first.img_norm1(hidden_states), img_mod1, modulate_index)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = hidden_states, encoder_hidden_states
        for index_block, block in enumerate(module.transformer_blocks):
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                text, image = run_checkpointed(
                    module,
                    block,
                    image,
                    text,
                    encoder_hidden_states_mask,
                    temb,
                    image_rotary_emb,
                    attention_kwargs,
                    modulate_index,
                )
            else:
                text, image = block(
                    hidden_states=image,
                    encoder_hidden_states=text,
                    encoder_hidden_states_mask=encoder_hidden_states_mask,
                    temb=temb,
                    image_rotary_emb=image_rotary_emb,
                    joint_attention_kwargs=attention_kwargs,
                    modulate_index=modulate_index,
                )
            if controlnet_block_samples is not None:
                interval_control = int(np.ceil(len(module.transformer_blocks) / len(controlnet_block_samples)))
                image = image + controlnet_block_samples[index_block // interval_control]
        return (image,)

    # zero_cond_t doubled the batch of temb; the output head uses the real timestep's half.
    temb_out = temb.chunk(2, dim=0)[0] if module.zero_cond_t else temb

    def postprocess(image: torch.Tensor) -> Any:
        output = module.proj_out(module.norm_out(image, temb_out))
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
