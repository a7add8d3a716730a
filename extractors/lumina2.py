"""Lumina-Image 2.0: Lumina2Transformer2DModel.

Mirrors Lumina2Transformer2DModel.forward of diffusers 0.42: the caption and timestep embedding,
the patchifying RoPE embedder, the context refiner (caption, masked) and the noise refiner (image,
modulated) run on every call; the caption and image tokens are then packed per sample into one
joint sequence (a mask only when samples differ in length), the main layers run on it, and the
output head unpatchifies each sample's image tokens. The LoRA scale rides in `attention_kwargs`.

Only the main layers are cached: the refiners always run, as in TeaCache4Lumina2. The modulated
input is the first main layer's norm1 (LuminaRMSNormZero) of the joint sequence, as TeaCache4Lumina2
(ali-vilab/TeaCache) takes it. Lumina counts time from noise (0) to image (1); the call is recorded
at 1 - timestep so that, as for every other family, the recorded timestep falls over a generation.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("Lumina2Transformer2DModel", lora_kwargs="attention_kwargs")
def extract_lumina2_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    recorded_timestep = 1.0 - float(timestep.flatten()[0])
    batch_size, _, height, width = hidden_states.shape

    temb, encoder_hidden_states = module.time_caption_embed(hidden_states, timestep, encoder_hidden_states)
    (
        hidden_states,
        context_rotary_emb,
        noise_rotary_emb,
        rotary_emb,
        encoder_seq_lengths,
        seq_lengths,
    ) = module.rope_embedder(hidden_states, encoder_attention_mask)
    hidden_states = module.x_embedder(hidden_states)

    for layer in module.context_refiner:
        encoder_hidden_states = layer(encoder_hidden_states, encoder_attention_mask, context_rotary_emb)
    for layer in module.noise_refiner:
        hidden_states = layer(hidden_states, None, noise_rotary_emb, temb)

    max_seq_len = max(seq_lengths)
    use_mask = len(set(seq_lengths)) > 1
    attention_mask = hidden_states.new_zeros(batch_size, max_seq_len, dtype=torch.bool)
    joint_hidden_states = hidden_states.new_zeros(batch_size, max_seq_len, module.config.hidden_size)
    for i, (encoder_seq_len, seq_len) in enumerate(zip(encoder_seq_lengths, seq_lengths)):
        attention_mask[i, :seq_len] = True
        joint_hidden_states[i, :encoder_seq_len] = encoder_hidden_states[i, :encoder_seq_len]
        joint_hidden_states[i, encoder_seq_len:seq_len] = hidden_states[i]
    layer_mask = attention_mask if use_mask else None

    modulated_input, *_ = module.layers[0].norm1(joint_hidden_states, temb)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        states = joint_hidden_states
        for layer in module.layers:
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                states = run_checkpointed(module, layer, states, layer_mask, rotary_emb, temb)
            else:
                states = layer(states, layer_mask, rotary_emb, temb)
        # One sequence carries caption and image; the head reads only the image tokens.
        return (states,)

    def postprocess(states: torch.Tensor) -> Any:
        states = module.norm_out(states, temb)
        p = module.config.patch_size
        output = []
        for i, (encoder_seq_len, seq_len) in enumerate(zip(encoder_seq_lengths, seq_lengths)):
            output.append(
                states[i][encoder_seq_len:seq_len]
                .view(height // p, width // p, p, p, module.out_channels)
                .permute(4, 0, 2, 1, 3)
                .flatten(3, 4)
                .flatten(1, 2)
            )
        output = torch.stack(output, dim=0)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=joint_hidden_states,
        encoder_hidden_states=None,
        temb=temb,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
    )
