"""FLUX.1 (dev, schnell, Kontext): FluxTransformer2DModel.

Mirrors FluxTransformer2DModel.forward of diffusers 0.42, including guidance, ControlNet residuals,
IP-Adapter embeddings and the LoRA scale carried in joint_attention_kwargs. The modulated input is
the first double-stream block's norm1 output, as in TeaCache4FLUX.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("FluxTransformer2DModel", lora_kwargs="joint_attention_kwargs")
def extract_flux_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    pooled_projections: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    txt_ids: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    controlnet_block_samples: list[torch.Tensor] | None = None,
    controlnet_single_block_samples: list[torch.Tensor] | None = None,
    return_dict: bool = True,
    controlnet_blocks_repeat: bool = False,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    hidden_states = module.x_embedder(hidden_states)

    timestep = timestep.to(hidden_states.dtype) * 1000
    if guidance is not None:
        guidance = guidance.to(hidden_states.dtype) * 1000
    temb = (
        module.time_text_embed(timestep, pooled_projections)
        if guidance is None
        else module.time_text_embed(timestep, guidance, pooled_projections)
    )
    modulated_input, *_ = module.transformer_blocks[0].norm1(hidden_states, emb=temb)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        # The text stream, the rotary embedding and IP-Adapter's projection feed only the blocks: a cached
        # call never needs them, so they are computed here rather than before the decision.
        text = module.context_embedder(encoder_hidden_states)
        # Batched ids are deprecated upstream; the forward takes the first row, so do we.
        ids = torch.cat((txt_ids[0] if txt_ids.ndim == 3 else txt_ids, img_ids[0] if img_ids.ndim == 3 else img_ids))
        attention_kwargs = joint_attention_kwargs
        if attention_kwargs is not None and "ip_adapter_image_embeds" in attention_kwargs:
            attention_kwargs = dict(attention_kwargs)
            ip_adapter_image_embeds = attention_kwargs.pop("ip_adapter_image_embeds")
            attention_kwargs["ip_hidden_states"] = module.encoder_hid_proj(ip_adapter_image_embeds)
        block_kwargs = dict(temb=temb, image_rotary_emb=module.pos_embed(ids), joint_attention_kwargs=attention_kwargs)

        image = hidden_states
        for index, block in enumerate(module.transformer_blocks):
            text, image = _call_block(module, block, image, text, block_kwargs)
            if controlnet_block_samples is not None:
                if controlnet_blocks_repeat:  # XLabs ControlNets
                    image = image + controlnet_block_samples[index % len(controlnet_block_samples)]
                else:
                    interval = int(np.ceil(len(module.transformer_blocks) / len(controlnet_block_samples)))
                    image = image + controlnet_block_samples[index // interval]
        for index, block in enumerate(module.single_transformer_blocks):
            text, image = _call_block(module, block, image, text, block_kwargs)
            if controlnet_single_block_samples is not None:
                interval = int(np.ceil(len(module.single_transformer_blocks) / len(controlnet_single_block_samples)))
                image = image + controlnet_single_block_samples[index // interval]
        # The text stream after the last block feeds nothing, so only the image residual is cached.
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        output = module.proj_out(module.norm_out(image, temb))
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


def _call_block(
    module: torch.nn.Module,
    block: torch.nn.Module,
    image: torch.Tensor,
    text: torch.Tensor,
    block_kwargs: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor]:
    if torch.is_grad_enabled() and module.gradient_checkpointing:
        return run_checkpointed(
            module,
            block,
            image,
            text,
            block_kwargs["temb"],
            block_kwargs["image_rotary_emb"],
            block_kwargs["joint_attention_kwargs"],
        )
    return block(hidden_states=image, encoder_hidden_states=text, **block_kwargs)
