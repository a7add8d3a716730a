"""HunyuanVideo (text-to-video, and image-to-video with either image condition): HunyuanVideoTransformer3DModel.

Mirrors HunyuanVideoTransformer3DModel.forward of diffusers 0.42: the token refiner over the LLaMA
embeddings and their mask, the CLIP pooled projection and the embedded guidance in the condition
embedding, the joint attention mask (padded text tokens masked out), RoPE over the latent grid,
20 double-stream then 40 single-stream blocks, and the unpatchify of the output head. HunyuanVideo-I2V
(image_condition_type "token_replace") adds a t=0 embedding that modulates the first frame's tokens
in every block; HunyuanVideo-I2V-33ch ("latent_concat") only widens the latent input. attention_kwargs
only carries the LoRA scale: the forward passes nothing else from it to the blocks.

The modulated input is the first double-stream block's norm1 output on the image stream (for
token_replace, its first-frame tokens modulated by the t=0 embedding), as TeaCache4HunyuanVideo
computes it from double_blocks[0]. The output head reads only the image stream, so only the image
residual is cached.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("HunyuanVideoTransformer3DModel", lora_kwargs="attention_kwargs")
def extract_hunyuan_video_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    pooled_projections: torch.Tensor,
    guidance: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    batch_size, _, num_frames, height, width = hidden_states.shape
    p, p_t = module.config.patch_size, module.config.patch_size_t
    post_patch_num_frames = num_frames // p_t
    post_patch_height = height // p
    post_patch_width = width // p
    first_frame_num_tokens = 1 * post_patch_height * post_patch_width

    image_rotary_emb = module.rope(hidden_states)

    temb, token_replace_emb = module.time_text_embed(timestep, pooled_projections, guidance)

    hidden_states = module.x_embedder(hidden_states)
    encoder_hidden_states = module.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)

    # Latent tokens always attend; text tokens past each prompt's valid length are masked out.
    latent_sequence_length = hidden_states.shape[1]
    condition_sequence_length = encoder_hidden_states.shape[1]
    sequence_length = latent_sequence_length + condition_sequence_length
    attention_mask = torch.ones(batch_size, sequence_length, device=hidden_states.device, dtype=torch.bool)
    effective_condition_sequence_length = encoder_attention_mask.sum(dim=1, dtype=torch.int)
    effective_sequence_length = latent_sequence_length + effective_condition_sequence_length
    indices = torch.arange(sequence_length, device=hidden_states.device).unsqueeze(0)
    mask_indices = indices >= effective_sequence_length.unsqueeze(1)
    attention_mask = attention_mask.masked_fill(mask_indices, False)
    attention_mask = attention_mask.unsqueeze(1).unsqueeze(1)

    first_norm = module.transformer_blocks[0].norm1
    if token_replace_emb is not None:
        modulated_input = first_norm(hidden_states, temb, token_replace_emb, first_frame_num_tokens)[0]
    else:
        modulated_input = first_norm(hidden_states, emb=temb)[0]

    block_args = (temb, attention_mask, image_rotary_emb, token_replace_emb, first_frame_num_tokens)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = hidden_states, encoder_hidden_states
        checkpointing = torch.is_grad_enabled() and module.gradient_checkpointing
        for block in (*module.transformer_blocks, *module.single_transformer_blocks):
            if checkpointing:
                image, text = run_checkpointed(module, block, image, text, *block_args)
            else:
                image, text = block(image, text, *block_args)
        # The text stream after the last block feeds nothing, so only the image residual is cached.
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        image = module.proj_out(module.norm_out(image, temb))
        image = image.reshape(batch_size, post_patch_num_frames, post_patch_height, post_patch_width, -1, p_t, p, p)
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
