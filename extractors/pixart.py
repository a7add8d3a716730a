"""PixArt-alpha and PixArt-sigma: PixArtTransformer2DModel.

Mirrors PixArtTransformer2DModel.forward of diffusers 0.42, including added_cond_kwargs (the
resolution/aspect_ratio micro-conditions PixArt-alpha 1024px uses), the self- and cross-attention
masks (0/1 masks or biases), cross_attention_kwargs and the learned-sigma output (out_channels is
twice the latent channels; the pipeline keeps the first half). The forward has no apply_lora_scale,
so no LoRA kwargs are registered.

PixArt is single-stream (text enters through cross-attention). The modulated input is the first
BasicTransformerBlock's ada_norm_single step: norm1(x) * (1 + scale_msa) + shift_msa, with
(shift_msa, scale_msa) from the block's scale_shift_table plus the adaln_single timestep projection.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.onload import own_tensor
from teacli.engine.registry import extractor_for


@extractor_for("PixArtTransformer2DModel")
def extract_pixart_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    added_cond_kwargs: dict[str, torch.Tensor] | None = None,
    cross_attention_kwargs: dict[str, Any] | None = None,
    attention_mask: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    if module.use_additional_conditions and added_cond_kwargs is None:
        raise ValueError("`added_cond_kwargs` cannot be None when using additional conditions for `adaln_single`.")
    recorded_timestep = float(timestep.flatten()[0])

    # 0/1 masks become additive biases with a singleton query dimension, as in the forward.
    if attention_mask is not None and attention_mask.ndim == 2:
        attention_mask = (1 - attention_mask.to(hidden_states.dtype)) * -10000.0
        attention_mask = attention_mask.unsqueeze(1)
    if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
        encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
        encoder_attention_mask = encoder_attention_mask.unsqueeze(1)

    batch_size = hidden_states.shape[0]
    p = module.config.patch_size
    height, width = hidden_states.shape[-2] // p, hidden_states.shape[-1] // p
    hidden_states = module.pos_embed(hidden_states)

    timestep, embedded_timestep = module.adaln_single(
        timestep, added_cond_kwargs, batch_size=batch_size, hidden_dtype=hidden_states.dtype
    )

    if module.caption_projection is not None:
        encoder_hidden_states = module.caption_projection(encoder_hidden_states)
        encoder_hidden_states = encoder_hidden_states.view(batch_size, -1, hidden_states.shape[-1])

    first = module.transformer_blocks[0]
    table = own_tensor(first, "scale_shift_table", timestep.device)  # read outside the block's forward
    shift_msa, scale_msa = (table[None] + timestep.reshape(batch_size, 6, -1)).chunk(6, dim=1)[:2]
    modulated_input = first.norm1(hidden_states) * (1 + scale_msa) + shift_msa

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image = hidden_states
        for block in module.transformer_blocks:
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                image = run_checkpointed(
                    module,
                    block,
                    image,
                    attention_mask,
                    encoder_hidden_states,
                    encoder_attention_mask,
                    timestep,
                    cross_attention_kwargs,
                    None,
                )
            else:
                image = block(
                    image,
                    attention_mask=attention_mask,
                    encoder_hidden_states=encoder_hidden_states,
                    encoder_attention_mask=encoder_attention_mask,
                    timestep=timestep,
                    cross_attention_kwargs=cross_attention_kwargs,
                    class_labels=None,
                )
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        table = module.scale_shift_table
        shift, scale = (table[None] + embedded_timestep[:, None].to(table.device)).chunk(2, dim=1)
        image = module.norm_out(image)
        image = image * (1 + scale.to(image.device)) + shift.to(image.device)
        image = module.proj_out(image).squeeze(1)
        out_channels = module.out_channels
        image = image.reshape(shape=(-1, height, width, p, p, out_channels))
        image = torch.einsum("nhwpqc->nchpwq", image)
        output = image.reshape(shape=(-1, out_channels, height * p, width * p))
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=timestep,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
    )
