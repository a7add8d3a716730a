"""LTX-2 (audio and video): LTX2VideoTransformer3DModel.

Used by LTX2Pipeline and LTX2ImageToVideoPipeline (Lightricks/LTX-2). Mirrors
LTX2VideoTransformer3DModel.forward of diffusers 0.42: separate video and audio timesteps (per-token
for image-to-video), the LTX-2.3 prompt modulation (sigma) and cross-modality timesteps, RoPE from the
grid sizes or from video_coords/audio_coords, 0/1 masks turned into biases, the keyframe embedding,
spatio-temporal guidance blocks with their perturbation mask, isolate_modalities, the LoRA scale in
attention_kwargs and both output heads.

Every block updates a video and an audio stream, and the forward returns a prediction for each, so
both residuals are cached: hidden_states is the video stream, encoder_hidden_states the audio stream
(positional slots; text enters through cross-attention and is not cached). The modulated input is the
first block's video norm1(x) * (1 + scale_msa) + shift_msa, as TeaCache4LTX-Video measures it; the
audio stream's counterpart is offered as the alternative "audio".
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.transformers.transformer_ltx2 import AudioVisualModelOutput

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.onload import own_tensor
from teacli.engine.registry import extractor_for


@extractor_for("LTX2VideoTransformer3DModel", lora_kwargs="attention_kwargs")
def extract_ltx2_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    audio_hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    audio_encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    audio_timestep: torch.Tensor | None = None,
    sigma: torch.Tensor | None = None,
    audio_sigma: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    audio_encoder_attention_mask: torch.Tensor | None = None,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    fps: float = 24.0,
    audio_num_frames: int | None = None,
    video_coords: torch.Tensor | None = None,
    audio_coords: torch.Tensor | None = None,
    isolate_modalities: bool = False,
    spatio_temporal_guidance_blocks: list[int] | None = None,
    perturbation_mask: torch.Tensor | None = None,
    use_cross_timestep: bool = False,
    attention_kwargs: dict[str, Any] | None = None,
    video_self_attention_mask: torch.Tensor | None = None,
    video_keyframes_mask: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    config = module.config
    # Image-to-video gives the conditioning frame's tokens timestep 0: record the noise level.
    recorded_timestep = float(timestep.detach().flatten().max())
    audio_timestep = audio_timestep if audio_timestep is not None else timestep
    audio_sigma = audio_sigma if audio_sigma is not None else sigma

    if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
        encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
        encoder_attention_mask = encoder_attention_mask.unsqueeze(1)
    if audio_encoder_attention_mask is not None and audio_encoder_attention_mask.ndim == 2:
        audio_encoder_attention_mask = (1 - audio_encoder_attention_mask.to(audio_hidden_states.dtype)) * -10000.0
        audio_encoder_attention_mask = audio_encoder_attention_mask.unsqueeze(1)
    if video_self_attention_mask is not None:
        video_self_attention_mask = (1 - video_self_attention_mask.to(hidden_states.dtype)) * -10000.0

    batch_size = hidden_states.size(0)

    if video_coords is None:
        video_coords = module.rope.prepare_video_coords(
            batch_size, num_frames, height, width, hidden_states.device, fps=fps
        )
    if audio_coords is None:
        audio_coords = module.audio_rope.prepare_audio_coords(batch_size, audio_num_frames, audio_hidden_states.device)
    video_rotary_emb = module.rope(video_coords, device=hidden_states.device)
    audio_rotary_emb = module.audio_rope(audio_coords, device=audio_hidden_states.device)
    video_cross_attn_rotary_emb = module.cross_attn_rope(video_coords[:, 0:1, :], device=hidden_states.device)
    audio_cross_attn_rotary_emb = module.cross_attn_audio_rope(
        audio_coords[:, 0:1, :], device=audio_hidden_states.device
    )

    hidden_states = module.proj_in(hidden_states)
    audio_hidden_states = module.audio_proj_in(audio_hidden_states)
    if config.use_keyframes_abs_pos_embedding and video_keyframes_mask is not None:
        marker = (video_keyframes_mask > 0).to(dtype=hidden_states.dtype)
        hidden_states = hidden_states + marker * module.keyframes_abs_pos_embedding.to(dtype=hidden_states.dtype)

    gate_scale_factor = config.cross_attn_timestep_scale_multiplier / config.timestep_scale_multiplier

    def embed(layer: torch.nn.Module, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        emb, embedded = layer(t, batch_size=batch_size, hidden_dtype=dtype)
        return emb.view(batch_size, -1, emb.size(-1)), embedded.view(batch_size, -1, embedded.size(-1))

    # temb modulates the blocks, embedded_timestep the output head (per modality).
    temb, embedded_timestep = embed(module.time_embed, timestep.flatten(), hidden_states.dtype)
    temb_audio, audio_embedded_timestep = embed(
        module.audio_time_embed, audio_timestep.flatten(), audio_hidden_states.dtype
    )

    if module.prompt_modulation and config.use_prompt_adaln_single:  # LTX-2.3
        temb_prompt, _ = embed(module.prompt_adaln, sigma.flatten(), hidden_states.dtype)
        temb_prompt_audio, _ = embed(module.audio_prompt_adaln, audio_sigma.flatten(), audio_hidden_states.dtype)
    else:
        temb_prompt = temb_prompt_audio = None

    video_ca_timestep = audio_sigma.flatten() if use_cross_timestep else timestep.flatten()
    video_cross_attn_scale_shift, _ = embed(
        module.av_cross_attn_video_scale_shift, video_ca_timestep, hidden_states.dtype
    )
    video_cross_attn_a2v_gate, _ = embed(
        module.av_cross_attn_video_a2v_gate, video_ca_timestep * gate_scale_factor, hidden_states.dtype
    )
    audio_ca_timestep = sigma.flatten() if use_cross_timestep else audio_timestep.flatten()
    audio_cross_attn_scale_shift, _ = embed(
        module.av_cross_attn_audio_scale_shift, audio_ca_timestep, audio_hidden_states.dtype
    )
    audio_cross_attn_v2a_gate, _ = embed(
        module.av_cross_attn_audio_v2a_gate, audio_ca_timestep * gate_scale_factor, audio_hidden_states.dtype
    )

    if config.use_prompt_embeddings:  # LTX-2.0
        encoder_hidden_states = module.caption_projection(encoder_hidden_states)
        encoder_hidden_states = encoder_hidden_states.view(batch_size, -1, hidden_states.size(-1))
        audio_encoder_hidden_states = module.audio_caption_projection(audio_encoder_hidden_states)
        audio_encoder_hidden_states = audio_encoder_hidden_states.view(batch_size, -1, audio_hidden_states.size(-1))

    stg_blocks = set(spatio_temporal_guidance_blocks or [])
    if stg_blocks and perturbation_mask is None:
        perturbation_mask = torch.zeros((batch_size,))  # STG without a mask perturbs every sample
    if perturbation_mask is not None and perturbation_mask.ndim == 1:
        perturbation_mask = perturbation_mask[:, None, None]
    all_perturbed = torch.all(perturbation_mask == 0) if perturbation_mask is not None else False

    first = module.transformer_blocks[0]
    # The first block's own tables, read outside its forward (offloading keeps them elsewhere until it runs).
    table = own_tensor(first, "scale_shift_table", temb.device)
    audio_table = own_tensor(first, "audio_scale_shift_table", temb_audio.device)
    shift_msa, scale_msa = first.get_mod_params(table, temb, batch_size)[:2]
    modulated_input = first.norm1(hidden_states) * (1 + scale_msa) + shift_msa
    audio_shift_msa, audio_scale_msa = first.get_mod_params(audio_table, temb_audio, batch_size)[:2]
    audio_modulated_input = first.audio_norm1(audio_hidden_states) * (1 + audio_scale_msa) + audio_shift_msa

    def run_transformer_blocks() -> tuple[torch.Tensor, torch.Tensor]:
        video, audio = hidden_states, audio_hidden_states
        for index, block in enumerate(module.transformer_blocks):
            block_perturbation_mask = perturbation_mask if index in stg_blocks else None
            block_all_perturbed = all_perturbed if index in stg_blocks else False
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                video, audio = run_checkpointed(
                    module,
                    block,
                    video,
                    audio,
                    encoder_hidden_states,
                    audio_encoder_hidden_states,
                    temb,
                    temb_audio,
                    video_cross_attn_scale_shift,
                    audio_cross_attn_scale_shift,
                    video_cross_attn_a2v_gate,
                    audio_cross_attn_v2a_gate,
                    temb_prompt,
                    temb_prompt_audio,
                    video_rotary_emb,
                    audio_rotary_emb,
                    video_cross_attn_rotary_emb,
                    audio_cross_attn_rotary_emb,
                    encoder_attention_mask,
                    audio_encoder_attention_mask,
                    video_self_attention_mask,
                    None,
                    None,
                    None,
                    not isolate_modalities,
                    not isolate_modalities,
                    block_perturbation_mask,
                    block_all_perturbed,
                )
            else:
                video, audio = block(
                    hidden_states=video,
                    audio_hidden_states=audio,
                    encoder_hidden_states=encoder_hidden_states,
                    audio_encoder_hidden_states=audio_encoder_hidden_states,
                    temb=temb,
                    temb_audio=temb_audio,
                    temb_ca_scale_shift=video_cross_attn_scale_shift,
                    temb_ca_audio_scale_shift=audio_cross_attn_scale_shift,
                    temb_ca_gate=video_cross_attn_a2v_gate,
                    temb_ca_audio_gate=audio_cross_attn_v2a_gate,
                    temb_prompt=temb_prompt,
                    temb_prompt_audio=temb_prompt_audio,
                    video_rotary_emb=video_rotary_emb,
                    audio_rotary_emb=audio_rotary_emb,
                    ca_video_rotary_emb=video_cross_attn_rotary_emb,
                    ca_audio_rotary_emb=audio_cross_attn_rotary_emb,
                    encoder_attention_mask=encoder_attention_mask,
                    audio_encoder_attention_mask=audio_encoder_attention_mask,
                    self_attention_mask=video_self_attention_mask,
                    audio_self_attention_mask=None,
                    a2v_cross_attention_mask=None,
                    v2a_cross_attention_mask=None,
                    use_a2v_cross_attention=not isolate_modalities,
                    use_v2a_cross_attention=not isolate_modalities,
                    perturbation_mask=block_perturbation_mask,
                    all_perturbed=block_all_perturbed,
                )
        return video, audio

    def postprocess(video: torch.Tensor, audio: torch.Tensor) -> Any:
        shift, scale = (module.scale_shift_table[None, None] + embedded_timestep[:, :, None]).unbind(dim=2)
        output = module.proj_out(module.norm_out(video) * (1 + scale) + shift)
        audio_values = module.audio_scale_shift_table[None, None] + audio_embedded_timestep[:, :, None]
        audio_shift, audio_scale = audio_values.unbind(dim=2)
        audio_output = module.audio_proj_out(module.audio_norm_out(audio) * (1 + audio_scale) + audio_shift)
        if not return_dict:
            return (output, audio_output)
        return AudioVisualModelOutput(sample=output, audio_sample=audio_output)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=audio_hidden_states,
        temb=temb,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
        modulated_alternatives={"audio": audio_modulated_input},
    )
