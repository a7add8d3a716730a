"""LTX-Video (0.9.x): LTXVideoTransformer3DModel.

Used by LTXPipeline, LTXImageToVideoPipeline and LTXConditionPipeline (Lightricks/LTX-Video and its
0.9.x checkpoints). Mirrors LTXVideoTransformer3DModel.forward of diffusers 0.42: RoPE from
num_frames/height/width/rope_interpolation_scale or from precomputed video_coords (the condition
pipeline), the 0/1 encoder_attention_mask turned into a bias, the LoRA scale carried in
attention_kwargs, per-token timesteps (image-to-video gives conditioning tokens timestep 0) and the
scale_shift_table output head.

Single-stream: text enters through cross-attention, so only the video stream is cached. The
modulated input is the first block's norm1(x) * (1 + scale_msa) + shift_msa, with (shift_msa,
scale_msa) from that block's scale_shift_table plus the timestep embedding, as TeaCache4LTX-Video.

Unlike TeaCache4LTX-Video, the cached residual is the blocks' and a cached call runs the output head
(norm_out, the scale_shift_table modulation, proj_out) with its own timestep; the reference caches the
residual after the modulated norm_out, so its cached calls keep the computed call's head modulation.
Decisions are the same; on tiny-ltx teacli's cached calls are about 7x closer to the computed output and
its videos 14-18 dB closer to the uncached ones (benchmarks/output_head.py, docs/benchmarks.md).
`extract_ltx_context_residual_after_head` is the reference's way, for that comparison.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.onload import own_tensor
from teacli.engine.registry import extractor_for


@extractor_for("LTXVideoTransformer3DModel", lora_kwargs="attention_kwargs")
def extract_ltx_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    rope_interpolation_scale: tuple[float, float, float] | torch.Tensor | None = None,
    video_coords: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
    *,
    residual_after_head: bool = False,
) -> CacheContext:
    # Image-to-video passes one timestep per token, 0 on the conditioning frame: record the noise level.
    recorded_timestep = float(timestep.detach().flatten().max())
    image_rotary_emb = module.rope(hidden_states, num_frames, height, width, rope_interpolation_scale, video_coords)

    if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
        encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
        encoder_attention_mask = encoder_attention_mask.unsqueeze(1)

    batch_size = hidden_states.size(0)
    hidden_states = module.proj_in(hidden_states)

    temb, embedded_timestep = module.time_embed(
        timestep.flatten(), batch_size=batch_size, hidden_dtype=hidden_states.dtype
    )
    temb = temb.view(batch_size, -1, temb.size(-1))
    embedded_timestep = embedded_timestep.view(batch_size, -1, embedded_timestep.size(-1))

    encoder_hidden_states = module.caption_projection(encoder_hidden_states)
    encoder_hidden_states = encoder_hidden_states.view(batch_size, -1, hidden_states.size(-1))

    first = module.transformer_blocks[0]
    table = own_tensor(first, "scale_shift_table", temb.device)  # read outside the block's forward
    ada_values = table[None, None] + temb.reshape(batch_size, temb.size(1), table.shape[0], -1)
    shift_msa, scale_msa = ada_values.unbind(dim=2)[:2]
    modulated_input = first.norm1(hidden_states) * (1 + scale_msa) + shift_msa

    def modulated_head(video: torch.Tensor) -> torch.Tensor:
        # The output head without proj_out: norm_out modulated by the scale_shift_table and this call's timestep.
        scale_shift_values = module.scale_shift_table[None, None] + embedded_timestep[:, :, None]
        shift, scale = scale_shift_values[:, :, 0], scale_shift_values[:, :, 1]
        return module.norm_out(video) * (1 + scale) + shift

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        video = hidden_states
        for block in module.transformer_blocks:
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                video = run_checkpointed(
                    module, block, video, encoder_hidden_states, temb, image_rotary_emb, encoder_attention_mask
                )
            else:
                video = block(
                    hidden_states=video,
                    encoder_hidden_states=encoder_hidden_states,
                    temb=temb,
                    image_rotary_emb=image_rotary_emb,
                    encoder_attention_mask=encoder_attention_mask,
                )
        return (modulated_head(video),) if residual_after_head else (video,)

    def postprocess(video: torch.Tensor) -> Any:
        if not residual_after_head:
            video = modulated_head(video)
        output = module.proj_out(video)
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


# TeaCache4LTX-Video's way, kept for comparison (benchmarks/output_head.py): the cached residual includes the
# modulated norm_out, so a cached call reuses the head of the computed call's timestep. Not registered.
extract_ltx_context_residual_after_head = partial(extract_ltx_context, residual_after_head=True)
