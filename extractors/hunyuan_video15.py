"""HunyuanVideo 1.5 (480p and 720p, text- and image-to-video): HunyuanVideo15Transformer3DModel.

Mirrors HunyuanVideo15Transformer3DModel.forward of diffusers 0.42: the token refiner over the
Qwen2.5-VL embeddings, the byT5 glyph embeddings, the SigLIP image embeddings (all zeros, and then
masked out, for text-to-video), each tagged by cond_type_embed and merged valid-tokens-first with
their masks, the MeanFlow timestep_r of the step-distilled checkpoints, 54 double-stream blocks
given the merged text mask, and the unpatchify of the output head. attention_kwargs only carries the
LoRA scale: the forward passes nothing else from it to the blocks.

The modulated input is the first block's norm1 (AdaLayerNormZero) output on the image stream, as
LightX2V's HunyuanVideo 1.5 TeaCache computes it (img_norm1 modulated by img_mod of double_blocks[0]).
The output head reads only the image stream, so only the image residual is cached.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("HunyuanVideo15Transformer3DModel", lora_kwargs="attention_kwargs")
def extract_hunyuan_video15_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    timestep_r: torch.Tensor | None = None,
    encoder_hidden_states_2: torch.Tensor | None = None,
    encoder_attention_mask_2: torch.Tensor | None = None,
    image_embeds: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    batch_size, _, num_frames, height, width = hidden_states.shape
    p_t, p_h, p_w = module.config.patch_size_t, module.config.patch_size, module.config.patch_size
    post_patch_num_frames = num_frames // p_t
    post_patch_height = height // p_h
    post_patch_width = width // p_w

    image_rotary_emb = module.rope(hidden_states)

    temb = module.time_embed(timestep, timestep_r=timestep_r)

    hidden_states = module.x_embedder(hidden_states)

    encoder_hidden_states = module.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)
    encoder_hidden_states = encoder_hidden_states + module.cond_type_embed(
        torch.zeros_like(encoder_hidden_states[:, :, 0], dtype=torch.long)
    )

    encoder_hidden_states_2 = module.context_embedder_2(encoder_hidden_states_2)
    encoder_hidden_states_2 = encoder_hidden_states_2 + module.cond_type_embed(
        torch.ones_like(encoder_hidden_states_2[:, :, 0], dtype=torch.long)
    )

    # Text-to-video pipelines pass all-zero image embeddings: zeroed and masked out.
    encoder_hidden_states_3 = module.image_embedder(image_embeds)
    is_t2v = torch.all(image_embeds == 0)
    mask_3_shape = (batch_size, encoder_hidden_states_3.shape[1])
    mask_3_kwargs = dict(dtype=encoder_attention_mask.dtype, device=encoder_attention_mask.device)
    if is_t2v:
        encoder_hidden_states_3 = encoder_hidden_states_3 * 0.0
        encoder_attention_mask_3 = torch.zeros(mask_3_shape, **mask_3_kwargs)
    else:
        encoder_attention_mask_3 = torch.ones(mask_3_shape, **mask_3_kwargs)
    encoder_hidden_states_3 = encoder_hidden_states_3 + module.cond_type_embed(
        2 * torch.ones_like(encoder_hidden_states_3[:, :, 0], dtype=torch.long)
    )

    encoder_attention_mask = encoder_attention_mask.bool()
    encoder_attention_mask_2 = encoder_attention_mask_2.bool()
    encoder_attention_mask_3 = encoder_attention_mask_3.bool()
    merged_states, merged_masks = [], []
    for text, text_mask, glyph, glyph_mask, image, image_mask in zip(
        encoder_hidden_states,
        encoder_attention_mask,
        encoder_hidden_states_2,
        encoder_attention_mask_2,
        encoder_hidden_states_3,
        encoder_attention_mask_3,
    ):
        # [valid image, valid byT5, valid MLLM, padding image, padding byT5 (zeroed), padding MLLM (zeroed)]
        merged_states.append(
            torch.cat(
                [
                    image[image_mask],
                    glyph[glyph_mask],
                    text[text_mask],
                    image[~image_mask],
                    torch.zeros_like(glyph[~glyph_mask]),
                    torch.zeros_like(text[~text_mask]),
                ],
                dim=0,
            )
        )
        merged_masks.append(
            torch.cat(
                [
                    image_mask[image_mask],
                    glyph_mask[glyph_mask],
                    text_mask[text_mask],
                    image_mask[~image_mask],
                    glyph_mask[~glyph_mask],
                    text_mask[~text_mask],
                ],
                dim=0,
            )
        )
    encoder_hidden_states = torch.stack(merged_states)
    encoder_attention_mask = torch.stack(merged_masks)

    modulated_input = module.transformer_blocks[0].norm1(hidden_states, emb=temb)[0]

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = hidden_states, encoder_hidden_states
        checkpointing = torch.is_grad_enabled() and module.gradient_checkpointing
        for block in module.transformer_blocks:
            if checkpointing:
                image, text = run_checkpointed(
                    module, block, image, text, temb, encoder_attention_mask, image_rotary_emb
                )
            else:
                image, text = block(image, text, temb, encoder_attention_mask, image_rotary_emb)
        # The text stream after the last block feeds nothing, so only the image residual is cached.
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        image = module.proj_out(module.norm_out(image, temb))
        image = image.reshape(batch_size, post_patch_num_frames, post_patch_height, post_patch_width, -1, p_t, p_h, p_w)
        image = image.permute(0, 4, 1, 5, 2, 6, 3, 7)
        output = image.flatten(6, 7).flatten(4, 5).flatten(2, 3)
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
