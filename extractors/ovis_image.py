"""Ovis-Image: OvisImageTransformer2DModel.

Mirrors OvisImageTransformer2DModel.forward of diffusers 0.42: a FLUX-like dual-stream then
single-stream stack (SwiGLU feed-forwards), a plain timestep embedding (no pooled text, no
guidance embedder) and an RMS-normed caption projection. The LoRA scale rides in
`joint_attention_kwargs`. The modulated input is the first dual-stream block's norm1 output
(AdaLayerNormZero of the image stream), as TeaCache4FLUX takes it for the architecture this copies.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.registry import extractor_for

from .flux import _call_block


@extractor_for("OvisImageTransformer2DModel", lora_kwargs="joint_attention_kwargs")
def extract_ovis_image_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    txt_ids: torch.Tensor | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    hidden_states = module.x_embedder(hidden_states)

    timestep = timestep.to(hidden_states.dtype) * 1000
    temb = module.timestep_embedder(module.time_proj(timestep).to(dtype=hidden_states.dtype))
    encoder_hidden_states = module.context_embedder(module.context_embedder_norm(encoder_hidden_states))

    # Batched ids are deprecated upstream (it warns); the forward takes the first row, so do we.
    if txt_ids.ndim == 3:
        txt_ids = txt_ids[0]
    if img_ids.ndim == 3:
        img_ids = img_ids[0]
    image_rotary_emb = module.pos_embed(torch.cat((txt_ids, img_ids), dim=0))

    modulated_input, *_ = module.transformer_blocks[0].norm1(hidden_states, emb=temb)
    block_kwargs = dict(temb=temb, image_rotary_emb=image_rotary_emb, joint_attention_kwargs=joint_attention_kwargs)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = hidden_states, encoder_hidden_states
        # The block call (and its checkpointing branch) is exactly FLUX's.
        for block in (*module.transformer_blocks, *module.single_transformer_blocks):
            text, image = _call_block(module, block, image, text, block_kwargs)
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
