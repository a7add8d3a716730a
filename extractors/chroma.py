"""Chroma (lodestones/Chroma1-HD and other Chroma1 checkpoints): ChromaTransformer2DModel.

Mirrors ChromaTransformer2DModel.forward of diffusers 0.42, including the text+image attention mask
ChromaPipeline passes, ControlNet residuals, IP-Adapter embeddings and the LoRA scale carried in
joint_attention_kwargs. Chroma is FLUX with its per-block modulations pruned: one distilled guidance
layer (the approximator) turns the timestep into every block's shift/scale/gate vectors at once.

The modulated input is the first double-stream block's norm1 output, LayerNorm(image) * (1 + scale_msa)
+ shift_msa, with that block's image modulation rows of the approximator output: the counterpart of
TeaCache4FLUX's choice, and what croquelois/forgeChroma and SD.Next's teacache_chroma measure.

Only the image stream is cached: the output head (norm_out, proj_out) reads the image tokens alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("ChromaTransformer2DModel", lora_kwargs="joint_attention_kwargs")
def extract_chroma_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    txt_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    controlnet_block_samples: list[torch.Tensor] | None = None,
    controlnet_single_block_samples: list[torch.Tensor] | None = None,
    return_dict: bool = True,
    controlnet_blocks_repeat: bool = False,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    hidden_states = module.x_embedder(hidden_states)

    timestep = timestep.to(hidden_states.dtype) * 1000
    pooled_temb = module.distilled_guidance_layer(module.time_text_embed(timestep))
    encoder_hidden_states = module.context_embedder(encoder_hidden_states)

    # Batched ids are deprecated upstream; the forward takes the first row, so do we.
    if txt_ids.ndim == 3:
        txt_ids = txt_ids[0]
    if img_ids.ndim == 3:
        img_ids = img_ids[0]
    image_rotary_emb = module.pos_embed(torch.cat((txt_ids, img_ids), dim=0))

    if joint_attention_kwargs is not None and "ip_adapter_image_embeds" in joint_attention_kwargs:
        joint_attention_kwargs = dict(joint_attention_kwargs)
        ip_adapter_image_embeds = joint_attention_kwargs.pop("ip_adapter_image_embeds")
        joint_attention_kwargs["ip_hidden_states"] = module.encoder_hid_proj(ip_adapter_image_embeds)

    double_blocks, single_blocks = module.transformer_blocks, module.single_transformer_blocks
    img_offset = 3 * len(single_blocks)
    txt_offset = img_offset + 6 * len(double_blocks)

    def double_block_temb(index: int) -> torch.Tensor:
        img_modulation = img_offset + 6 * index
        text_modulation = txt_offset + 6 * index
        return torch.cat(
            (
                pooled_temb[:, img_modulation : img_modulation + 6],
                pooled_temb[:, text_modulation : text_modulation + 6],
            ),
            dim=1,
        )

    # The block splits temb into image rows [:6] and text rows [6:]; norm1 takes the image rows.
    modulated_input, *_ = double_blocks[0].norm1(hidden_states, emb=double_block_temb(0)[:, :6])
    final_temb = pooled_temb[:, -2:]

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = hidden_states, encoder_hidden_states
        for index, block in enumerate(double_blocks):
            temb = double_block_temb(index)
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                text, image = run_checkpointed(module, block, image, text, temb, image_rotary_emb, attention_mask)
            else:
                text, image = block(
                    hidden_states=image,
                    encoder_hidden_states=text,
                    temb=temb,
                    image_rotary_emb=image_rotary_emb,
                    attention_mask=attention_mask,
                    joint_attention_kwargs=joint_attention_kwargs,
                )
            if controlnet_block_samples is not None:
                if controlnet_blocks_repeat:  # XLabs ControlNets
                    image = image + controlnet_block_samples[index % len(controlnet_block_samples)]
                else:
                    interval = int(np.ceil(len(double_blocks) / len(controlnet_block_samples)))
                    image = image + controlnet_block_samples[index // interval]

        joint = torch.cat([text, image], dim=1)
        text_len = text.shape[1]
        for index, block in enumerate(single_blocks):
            temb = pooled_temb[:, 3 * index : 3 * index + 3]
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                # Upstream passes no attention mask on this path; mirrored as is.
                joint = run_checkpointed(module, block, joint, temb, image_rotary_emb)
            else:
                joint = block(
                    hidden_states=joint,
                    temb=temb,
                    image_rotary_emb=image_rotary_emb,
                    attention_mask=attention_mask,
                    joint_attention_kwargs=joint_attention_kwargs,
                )
            if controlnet_single_block_samples is not None:
                interval = int(np.ceil(len(single_blocks) / len(controlnet_single_block_samples)))
                joint[:, text_len:, ...] = joint[:, text_len:, ...] + controlnet_single_block_samples[index // interval]
        return (joint[:, text_len:, ...],)

    def postprocess(image: torch.Tensor) -> Any:
        output = module.proj_out(module.norm_out(image, final_temb))
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=pooled_temb,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
    )
