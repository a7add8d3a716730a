"""HunyuanImage 2.1 (base, distilled and refiner): HunyuanImageTransformer2DModel.

Mirrors HunyuanImageTransformer2DModel.forward of diffusers 0.42: 4D (image) and 5D (refiner)
latents, the token refiner over the MLLM embeddings and their mask, the byT5 glyph embeddings
(encoder_hidden_states_2 and its mask, merged valid-tokens-first), the guidance embedding and the
MeanFlow timestep_r of the distilled checkpoint. attention_kwargs only carries the LoRA scale: the
forward passes nothing else from it to the blocks.

The modulated input is the first double-stream block's norm1 (AdaLayerNormZero) output on the
image stream, as TeaCache4HunyuanVideo does for the same block design. The output head reads only
the image stream, so only the image residual is cached.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("HunyuanImageTransformer2DModel", lora_kwargs="attention_kwargs")
def extract_hunyuan_image_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    timestep_r: torch.Tensor | None = None,
    encoder_hidden_states_2: torch.Tensor | None = None,
    encoder_attention_mask_2: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    if hidden_states.ndim == 4:
        batch_size, _, height, width = hidden_states.shape
        sizes = (height, width)
    elif hidden_states.ndim == 5:
        batch_size, _, frame, height, width = hidden_states.shape
        sizes = (frame, height, width)
    else:
        raise ValueError(f"hidden_states must be a 4D or 5D tensor, got {hidden_states.shape}")
    patch_size = module.config.patch_size
    post_patch_sizes = tuple(d // p for d, p in zip(sizes, patch_size))

    image_rotary_emb = module.rope(hidden_states)

    encoder_attention_mask = encoder_attention_mask.bool()
    temb = module.time_guidance_embed(timestep, guidance=guidance, timestep_r=timestep_r)
    hidden_states = module.x_embedder(hidden_states)
    encoder_hidden_states = module.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)

    if module.context_embedder_2 is not None and encoder_hidden_states_2 is not None:
        encoder_hidden_states_2 = module.context_embedder_2(encoder_hidden_states_2)
        encoder_attention_mask_2 = encoder_attention_mask_2.bool()
        merged_states, merged_masks = [], []
        for text, mask, glyph, glyph_mask in zip(
            encoder_hidden_states, encoder_attention_mask, encoder_hidden_states_2, encoder_attention_mask_2
        ):
            # [valid byT5, valid MLLM, padding byT5, padding MLLM], as the forward orders them
            merged_states.append(torch.cat([glyph[glyph_mask], text[mask], glyph[~glyph_mask], text[~mask]], dim=0))
            merged_masks.append(
                torch.cat([glyph_mask[glyph_mask], mask[mask], glyph_mask[~glyph_mask], mask[~mask]], dim=0)
            )
        encoder_hidden_states = torch.stack(merged_states)
        encoder_attention_mask = torch.stack(merged_masks)

    attention_mask = torch.nn.functional.pad(encoder_attention_mask, (hidden_states.shape[1], 0), value=True)
    attention_mask = attention_mask.unsqueeze(1).unsqueeze(2)

    modulated_input = module.transformer_blocks[0].norm1(hidden_states, emb=temb)[0]

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = hidden_states, encoder_hidden_states
        checkpointing = torch.is_grad_enabled() and module.gradient_checkpointing
        for block in (*module.transformer_blocks, *module.single_transformer_blocks):
            if checkpointing:
                image, text = run_checkpointed(
                    module, block, image, text, temb, attention_mask=attention_mask, image_rotary_emb=image_rotary_emb
                )
            else:
                image, text = block(image, text, temb, attention_mask=attention_mask, image_rotary_emb=image_rotary_emb)
        # The text stream after the last block feeds nothing, so only the image residual is cached.
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        image = module.proj_out(module.norm_out(image, temb))
        out_channels = module.config.out_channels
        image = image.reshape(batch_size, *post_patch_sizes, out_channels, *patch_size)
        ndim = len(post_patch_sizes)
        permutation = [0, ndim + 1]
        for i in range(ndim):
            permutation.extend([i + 1, ndim + 2 + i])
        image = image.permute(*permutation)
        output = image.reshape(batch_size, out_channels, *(n * p for n, p in zip(post_patch_sizes, patch_size)))
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
