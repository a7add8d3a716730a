"""HiDream-I1 (Full, Dev, Fast): HiDreamImageTransformer2DModel.

Mirrors HiDreamImageTransformer2DModel.forward of diffusers 0.42: patchify (square, or non-square
padded to max_seq with hidden_states_masks), or an already patchified input with its masks, img_ids
and img_sizes; double-stream blocks whose text stream is the T5 + first Llama states with one more
Llama layer appended per block; then single-stream blocks over [image, text] with a new Llama layer
appended each time; the final layer and unpatchify. attention_kwargs only carries the LoRA scale.

The modulated input is the timestep embedding (`t_embedder` output, before the pooled text embedding
is added), exactly what ali-vilab/TeaCache TeaCache4HiDream-I1 measures and fitted its coefficients
on. The first double block's adaLN-modulated norm of the image stream would not match those fits.

Only the image stream is cached: the output head reads the image tokens and temb, nothing else.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("HiDreamImageTransformer2DModel", lora_kwargs="attention_kwargs")
def extract_hidream_image_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    timesteps: torch.Tensor | None = None,
    encoder_hidden_states_t5: torch.Tensor | None = None,
    encoder_hidden_states_llama3: torch.Tensor | None = None,
    pooled_embeds: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    img_sizes: list[tuple[int, int]] | None = None,
    hidden_states_masks: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    if hidden_states_masks is not None and (img_ids is None or img_sizes is None):
        raise ValueError("if `hidden_states_masks` is passed, `img_ids` and `img_sizes` must also be passed.")
    elif hidden_states_masks is not None and hidden_states.ndim != 3:
        raise ValueError(
            "if `hidden_states_masks` is passed, `hidden_states` must be a 3D tensors with shape "
            "(batch_size, patch_height * patch_width, patch_size * patch_size * channels)"
        )
    recorded_timestep = float(torch.as_tensor(timesteps).flatten()[0])

    batch_size = hidden_states.shape[0]
    hidden_states_type = hidden_states.dtype
    if hidden_states_masks is None:
        hidden_states, hidden_states_masks, img_sizes, img_ids = module.patchify(hidden_states)
    hidden_states = module.x_embedder(hidden_states)

    timestep_embedding = module.t_embedder(timesteps, hidden_states_type)
    temb = timestep_embedding + module.p_embedder(pooled_embeds)

    encoder_hidden_states = [encoder_hidden_states_llama3[k] for k in module.config.llama_layers]
    if module.caption_projection is not None:
        projected = []
        for i, enc_hidden_state in enumerate(encoder_hidden_states):
            enc_hidden_state = module.caption_projection[i](enc_hidden_state)
            projected.append(enc_hidden_state.view(batch_size, -1, hidden_states.shape[-1]))
        encoder_hidden_states = projected
        encoder_hidden_states_t5 = module.caption_projection[-1](encoder_hidden_states_t5)
        encoder_hidden_states.append(encoder_hidden_states_t5.view(batch_size, -1, hidden_states.shape[-1]))

    txt_ids = torch.zeros(
        batch_size,
        encoder_hidden_states[-1].shape[1] + encoder_hidden_states[-2].shape[1] + encoder_hidden_states[0].shape[1],
        3,
        device=img_ids.device,
        dtype=img_ids.dtype,
    )
    image_rotary_emb = module.pe_embedder(torch.cat((img_ids, txt_ids), dim=1))
    device = hidden_states.device
    initial_text = torch.cat([encoder_hidden_states[-1].to(device), encoder_hidden_states[-2].to(device)], dim=1)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text, masks = hidden_states, initial_text, hidden_states_masks
        text_seq_len = text.shape[1]
        block_id = 0
        for block in module.double_stream_blocks:
            llama = encoder_hidden_states[block_id].to(device)
            joint_text = torch.cat([text, llama], dim=1)
            image, text = _call_block(module, block, image, masks, joint_text, temb, image_rotary_emb)
            text = text[:, :text_seq_len]
            block_id += 1

        image_tokens_seq_len = image.shape[1]
        image = torch.cat([image, text], dim=1)
        joint_seq_len = image.shape[1]
        if masks is not None:
            # `llama` is the last double block's Llama layer, as in the forward.
            ones = torch.ones((batch_size, text.shape[1] + llama.shape[1]), device=masks.device, dtype=masks.dtype)
            masks = torch.cat([masks, ones], dim=1)

        for block in module.single_stream_blocks:
            llama = encoder_hidden_states[block_id].to(device)
            image = torch.cat([image, llama], dim=1)
            image = _call_block(module, block, image, masks, None, temb, image_rotary_emb)
            image = image[:, :joint_seq_len]
            block_id += 1
        return (image[:, :image_tokens_seq_len, ...],)

    def postprocess(image: torch.Tensor) -> Any:
        output = module.final_layer(image, temb)
        output = module.unpatchify(output, img_sizes, module.training)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    return CacheContext(
        modulated_input=timestep_embedding,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=temb,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
    )


def _call_block(
    module: torch.nn.Module,
    block: torch.nn.Module,
    image: torch.Tensor,
    masks: torch.Tensor | None,
    text: torch.Tensor | None,
    temb: torch.Tensor,
    image_rotary_emb: torch.Tensor,
) -> Any:
    if torch.is_grad_enabled() and module.gradient_checkpointing:
        return run_checkpointed(module, block, image, masks, text, temb, image_rotary_emb)
    return block(
        hidden_states=image,
        hidden_states_masks=masks,
        encoder_hidden_states=text,
        temb=temb,
        image_rotary_emb=image_rotary_emb,
    )
