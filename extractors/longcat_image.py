"""LongCat-Image and LongCat-Image-Edit: LongCatImageTransformer2DModel.

Mirrors LongCatImageTransformer2DModel.forward of diffusers 0.42: a FLUX-like dual-stream then
single-stream stack with a plain timestep embedding (no pooled text, no guidance embedder: the
`guidance` argument is accepted and ignored, as upstream). The forward takes no attention kwargs,
so no LoRA scale either. The modulated input is the first dual-stream block's norm1 output
(AdaLayerNormZero of the image stream), as in vllm-omni's extract_longcat_context. The edit
pipeline concatenates the reference-image latents to `hidden_states` and slices the output itself.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("LongCatImageTransformer2DModel")
def extract_longcat_image_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    txt_ids: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    hidden_states = module.x_embedder(hidden_states)

    timestep = timestep.to(hidden_states.dtype) * 1000
    temb = module.time_embed(timestep, hidden_states.dtype)
    encoder_hidden_states = module.context_embedder(encoder_hidden_states)

    # Unlike FLUX, upstream concatenates the ids as given (no batched-ids fallback).
    image_rotary_emb = module.pos_embed(torch.cat((txt_ids, img_ids), dim=0))

    modulated_input, *_ = module.transformer_blocks[0].norm1(hidden_states, emb=temb)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = hidden_states, encoder_hidden_states
        for blocks, checkpointed in (
            (module.transformer_blocks, module.use_checkpoint),
            (module.single_transformer_blocks, module.use_single_checkpoint),
        ):
            for index, block in enumerate(blocks):
                if torch.is_grad_enabled() and module.gradient_checkpointing and checkpointed[index]:
                    text, image = run_checkpointed(module, block, image, text, temb, image_rotary_emb)
                else:
                    text, image = block(
                        hidden_states=image, encoder_hidden_states=text, temb=temb, image_rotary_emb=image_rotary_emb
                    )
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
