"""CogVideoX (2b, 5b, 5b-I2V) and CogVideoX 1.5 (5B, 5B-I2V): CogVideoXTransformer3DModel.

Mirrors CogVideoXTransformer3DModel.forward of diffusers 0.42: the timestep embedding (plus
timestep_cond, plus the ofs embedding that only CogVideoX 1.5 I2V has), the joint patch embedding of
text and video (sin-cos positions for 2b, none for the RoPE models, the linear 3D patchifier of 1.5
when patch_size_t is set), the block loop with image_rotary_emb and attention_kwargs, then norm_final,
norm_out, proj_out and the 1.0 or 1.5 unpatchify.

The modulated input is the timestep embedding `emb` (time_embedding(time_proj(t)), plus ofs), as
ali-vilab/TeaCache's TeaCache4CogVideoX1.5 and its CogVideoX eval script measure it: the published
CogVideoX coefficients were fitted on that tensor, not on a block's norm output.

The blocks return both streams, but in diffusers 0.42 norm_final, norm_out and proj_out read only
the video stream (norm_final is a per-token LayerNorm, so TeaCache's older text+video concatenation
before it changed nothing), so only the video residual is cached.

CogVideoXPipeline and CogVideoXImageToVideoPipeline batch the negative and positive prompts into one
call under cache_context("cond_uncond"), and keep that name without CFG too: one state per generation.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("CogVideoXTransformer3DModel", lora_kwargs="attention_kwargs")
def extract_cogvideox_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: int | float | torch.LongTensor,
    timestep_cond: torch.Tensor | None = None,
    ofs: int | float | torch.LongTensor | None = None,
    image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    batch_size, num_frames, channels, height, width = hidden_states.shape
    recorded_timestep = float(torch.as_tensor(timestep).flatten()[0])

    t_emb = module.time_proj(timestep)
    # time_proj has no weights and returns fp32; time_embedding may run in half precision.
    t_emb = t_emb.to(dtype=hidden_states.dtype)
    emb = module.time_embedding(t_emb, timestep_cond)

    if module.ofs_embedding is not None:
        ofs_emb = module.ofs_proj(ofs)
        ofs_emb = ofs_emb.to(dtype=hidden_states.dtype)
        ofs_emb = module.ofs_embedding(ofs_emb)
        emb = emb + ofs_emb

    joint = module.patch_embed(encoder_hidden_states, hidden_states)
    joint = module.embedding_dropout(joint)

    text_seq_length = encoder_hidden_states.shape[1]
    text = joint[:, :text_seq_length]
    video = joint[:, text_seq_length:]

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, context = video, text
        for block in module.transformer_blocks:
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                image, context = run_checkpointed(
                    module, block, image, context, emb, image_rotary_emb, attention_kwargs
                )
            else:
                image, context = block(
                    hidden_states=image,
                    encoder_hidden_states=context,
                    temb=emb,
                    image_rotary_emb=image_rotary_emb,
                    attention_kwargs=attention_kwargs,
                )
        # The text stream after the last block feeds nothing: only the video residual is cached.
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        image = module.norm_final(image)
        image = module.norm_out(image, temb=emb)
        image = module.proj_out(image)

        p = module.config.patch_size
        p_t = module.config.patch_size_t
        if p_t is None:
            output = image.reshape(batch_size, num_frames, height // p, width // p, -1, p, p)
            output = output.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)
        else:
            output = image.reshape(batch_size, (num_frames + p_t - 1) // p_t, height // p, width // p, -1, p_t, p, p)
            output = output.permute(0, 1, 5, 4, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(1, 2)

        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    return CacheContext(
        modulated_input=emb,
        hidden_states=video,
        encoder_hidden_states=None,
        temb=emb,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
    )
