"""Stable Audio Open: StableAudioDiTModel (StableAudioPipeline, stabilityai/stable-audio-open-1.0).

Mirrors StableAudioDiTModel.forward of diffusers 0.42: the cross-attention projection of the text
and duration embeddings, the global (duration) projection plus the Fourier timestep embedding,
the 1x1 preprocess conv added to the latents, the (batch, channels, length) -> (batch, length,
channels) transpose and proj_in, the global token prepended to the sequence (and a True prepended
to the self-attention mask when one is given), the blocks with the rotary embedding and the
cross-attention mask, then proj_out, the transpose back, the global token dropped and the 1x1
postprocess conv added.

The blocks carry no timestep modulation: the timestep enters as the prepended global token. The
modulated input is therefore the first block's norm1 (a plain LayerNorm) of the whole sequence,
global token included, as vllm-omni's extract_stable_audio_context takes it
(vllm_omni/diffusion/cache/teacache/extractors.py). The cached residual covers that sequence.

StableAudioPipeline batches CFG (negative and positive prompts in one call) without cache_context:
every call lands in the one default state.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("StableAudioDiTModel")
def extract_stable_audio_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    global_hidden_states: torch.Tensor | None = None,
    rotary_embedding: tuple[torch.Tensor, torch.Tensor] | None = None,
    return_dict: bool = True,
    attention_mask: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    cross_attention_hidden_states = module.cross_attention_proj(encoder_hidden_states)
    global_hidden_states = module.global_proj(global_hidden_states)
    time_hidden_states = module.timestep_proj(module.time_proj(timestep.to(module.dtype)))

    global_hidden_states = global_hidden_states + time_hidden_states.unsqueeze(1)

    hidden_states = module.preprocess_conv(hidden_states) + hidden_states
    hidden_states = hidden_states.transpose(1, 2)  # (batch, channels, length) -> (batch, length, channels)
    hidden_states = module.proj_in(hidden_states)

    # The global (duration + timestep) token leads the sequence; the mask lets every token see it.
    hidden_states = torch.cat([global_hidden_states, hidden_states], dim=-2)
    if attention_mask is not None:
        prepend_mask = torch.ones((hidden_states.shape[0], 1), device=hidden_states.device, dtype=torch.bool)
        attention_mask = torch.cat([prepend_mask, attention_mask], dim=-1)

    modulated_input = module.transformer_blocks[0].norm1(hidden_states)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        sequence = hidden_states
        for block in module.transformer_blocks:
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                sequence = run_checkpointed(
                    module,
                    block,
                    sequence,
                    attention_mask,
                    cross_attention_hidden_states,
                    encoder_attention_mask,
                    rotary_embedding,
                )
            else:
                sequence = block(
                    hidden_states=sequence,
                    attention_mask=attention_mask,
                    encoder_hidden_states=cross_attention_hidden_states,
                    encoder_attention_mask=encoder_attention_mask,
                    rotary_embedding=rotary_embedding,
                )
        return (sequence,)

    def postprocess(sequence: torch.Tensor) -> Any:
        output = module.proj_out(sequence)
        # Back to (batch, channels, length), without the prepended global token.
        output = output.transpose(1, 2)[:, :, 1:]
        output = module.postprocess_conv(output) + output
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=global_hidden_states,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
    )
