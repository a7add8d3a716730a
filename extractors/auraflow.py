"""AuraFlow (fal/AuraFlow, AuraFlow-v0.2, AuraFlow-v0.3): AuraFlowTransformer2DModel.

Mirrors AuraFlowTransformer2DModel.forward of diffusers 0.42: patch + positional embedding, the
timestep embedding (no pooled text), the caption projection with 8 learned register tokens prepended,
MMDiT joint blocks, then single DiT blocks over [text, image], the pre-final norm, proj_out and
unpatchify. attention_kwargs carries the LoRA scale and goes to the attention processors.

The modulated input is the first joint block's norm1 output, FP32 LayerNorm(image) * (1 + scale_msa)
+ shift_msa: the counterpart of TeaCache4FLUX's choice for this MMDiT. Only the image stream is
cached: the output head reads the image tokens and temb alone.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.utils.torch_utils import maybe_adjust_dtype_for_device

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("AuraFlowTransformer2DModel", lora_kwargs="attention_kwargs")
def extract_auraflow_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    height, width = hidden_states.shape[-2:]

    hidden_states = module.pos_embed(hidden_states)  # adds the positional embedding too
    temb = module.time_step_embed(timestep).to(dtype=next(module.parameters()).dtype)
    temb = module.time_step_proj(temb)
    encoder_hidden_states = module.context_embedder(encoder_hidden_states)
    register_tokens_dtype = maybe_adjust_dtype_for_device(encoder_hidden_states.dtype, encoder_hidden_states.device)
    register_tokens = module.register_tokens.to(device=encoder_hidden_states.device, dtype=register_tokens_dtype)
    encoder_hidden_states = torch.cat(
        [register_tokens.repeat(encoder_hidden_states.size(0), 1, 1), encoder_hidden_states], dim=1
    )

    # AuraFlow checkpoints all start with joint blocks; a config without any starts with a single block.
    first_block = (module.joint_transformer_blocks or module.single_transformer_blocks)[0]
    modulated_input, *_ = first_block.norm1(hidden_states, emb=temb)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = hidden_states, encoder_hidden_states
        for block in module.joint_transformer_blocks:
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                # Upstream passes no attention_kwargs on this path; mirrored as is.
                text, image = run_checkpointed(module, block, image, text, temb)
            else:
                text, image = block(
                    hidden_states=image, encoder_hidden_states=text, temb=temb, attention_kwargs=attention_kwargs
                )

        if len(module.single_transformer_blocks) > 0:
            text_len = text.size(1)
            joint = torch.cat([text, image], dim=1)
            for block in module.single_transformer_blocks:
                if torch.is_grad_enabled() and module.gradient_checkpointing:
                    joint = run_checkpointed(module, block, joint, temb)
                else:
                    joint = block(hidden_states=joint, temb=temb, attention_kwargs=attention_kwargs)
            image = joint[:, text_len:]
        return (image,)

    def postprocess(image: torch.Tensor) -> Any:
        image = module.proj_out(module.norm_out(image, temb))
        patch_size = module.config.patch_size
        out_channels = module.config.out_channels
        patch_height, patch_width = height // patch_size, width // patch_size
        image = image.reshape(shape=(image.shape[0], patch_height, patch_width, patch_size, patch_size, out_channels))
        image = torch.einsum("nhwpqc->nchpwq", image)
        output = image.reshape(
            shape=(image.shape[0], out_channels, patch_height * patch_size, patch_width * patch_size)
        )
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
