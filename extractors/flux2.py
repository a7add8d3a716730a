"""FLUX.2 ([dev], [klein], [klein] base, [klein] KV): Flux2Transformer2DModel.

Mirrors Flux2Transformer2DModel.forward of diffusers 0.42: guidance (dev), the LoRA scale carried in
joint_attention_kwargs, and the reference-image KV cache of Flux2KleinKVPipeline (kv_cache_mode "extract" on
step 0, "cached" afterwards). The modulated input is the first double-stream block's norm1 output modulated by
its attention shift/scale, `(1 + scale_msa) * norm1(x) + shift_msa`, as vllm-omni's Flux2 extractor does.

Only the image stream is cached: the text tokens are dropped before the output head. In "extract" mode the
reference tokens prepended to the image stream are dropped too, so the cached stream and the modulated input are
the noisy-latent tokens in every mode, and a residual computed on step 0 fits the "cached" steps that follow.
Step 0 is always computed, which is also what fills the KV cache.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.transformers.transformer_flux2 import (
    Flux2KVCache,
    Flux2Modulation,
    Flux2Transformer2DModelOutput,
    _blend_double_block_mods,
    _blend_single_block_mods,
)

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("Flux2Transformer2DModel", lora_kwargs="joint_attention_kwargs")
def extract_flux2_context(
    module: torch.nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    txt_ids: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
    kv_cache: Flux2KVCache | None = None,
    kv_cache_mode: str | None = None,
    num_ref_tokens: int = 0,
    ref_fixed_timestep: float = 0.0,
) -> CacheContext:
    recorded_timestep = float(timestep.flatten()[0])
    num_txt_tokens = encoder_hidden_states.shape[1]

    timestep = timestep.to(hidden_states.dtype) * 1000
    if guidance is not None:
        guidance = guidance.to(hidden_states.dtype) * 1000
    temb = module.time_guidance_embed(timestep, guidance)

    double_stream_mod_img = module.double_stream_modulation_img(temb)
    double_stream_mod_txt = module.double_stream_modulation_txt(temb)
    single_stream_mod = module.single_stream_modulation(temb)

    extracting = kv_cache_mode == "extract" and num_ref_tokens > 0
    if extracting:
        num_img_tokens = hidden_states.shape[1]  # includes the reference tokens
        kv_cache = Flux2KVCache(
            num_double_layers=len(module.transformer_blocks),
            num_single_layers=len(module.single_transformer_blocks),
        )
        kv_cache.num_ref_tokens = num_ref_tokens
        ref_timestep = torch.full_like(timestep, ref_fixed_timestep * 1000)
        ref_temb = module.time_guidance_embed(ref_timestep, guidance)
        ref_double_mod_img = module.double_stream_modulation_img(ref_temb)
        ref_single_mod = module.single_stream_modulation(ref_temb)
        double_stream_mod_img = _blend_double_block_mods(
            double_stream_mod_img, ref_double_mod_img, num_ref_tokens, num_img_tokens
        )
        # The forward blends this after the double blocks; it depends only on lengths known now.
        single_stream_mod = _blend_single_block_mods(
            single_stream_mod, ref_single_mod, num_txt_tokens, num_ref_tokens, num_txt_tokens + num_img_tokens
        )
    num_ref_dropped = num_ref_tokens if extracting else 0  # reference tokens at the front of the image stream

    image_tokens = module.x_embedder(hidden_states)
    encoder_hidden_states = module.context_embedder(encoder_hidden_states)

    # Batched ids are deprecated upstream; the forward takes the first row, so do we.
    if img_ids.ndim == 3:
        img_ids = img_ids[0]
    if txt_ids.ndim == 3:
        txt_ids = txt_ids[0]
    image_rotary_emb = module.pos_embed(img_ids)
    text_rotary_emb = module.pos_embed(txt_ids)
    concat_rotary_emb = (
        torch.cat([text_rotary_emb[0], image_rotary_emb[0]], dim=0),
        torch.cat([text_rotary_emb[1], image_rotary_emb[1]], dim=0),
    )

    if kv_cache_mode == "extract":
        kv_attn_kwargs = {
            **(joint_attention_kwargs or {}),
            "kv_cache": None,
            "kv_cache_mode": "extract",
            "num_ref_tokens": num_ref_tokens,
        }
    elif kv_cache_mode == "cached" and kv_cache is not None:
        kv_attn_kwargs = {
            **(joint_attention_kwargs or {}),
            "kv_cache": None,
            "kv_cache_mode": "cached",
            "num_ref_tokens": kv_cache.num_ref_tokens,
        }
    else:
        kv_attn_kwargs = joint_attention_kwargs

    # What Flux2TransformerBlock computes first for the image stream.
    (shift_msa, scale_msa, _), _ = Flux2Modulation.split(double_stream_mod_img, 2)
    modulated = (1 + scale_msa) * module.transformer_blocks[0].norm1(image_tokens) + shift_msa
    modulated_input = modulated[:, num_ref_dropped:]
    noisy_tokens = image_tokens[:, num_ref_dropped:]

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        image, text = image_tokens, encoder_hidden_states
        for index, block in enumerate(module.transformer_blocks):
            if kv_cache_mode is not None and kv_cache is not None:
                kv_attn_kwargs["kv_cache"] = kv_cache.get_double(index)
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                text, image = run_checkpointed(
                    module,
                    block,
                    image,
                    text,
                    double_stream_mod_img,
                    double_stream_mod_txt,
                    concat_rotary_emb,
                    kv_attn_kwargs,
                )
            else:
                text, image = block(
                    hidden_states=image,
                    encoder_hidden_states=text,
                    temb_mod_img=double_stream_mod_img,
                    temb_mod_txt=double_stream_mod_txt,
                    image_rotary_emb=concat_rotary_emb,
                    joint_attention_kwargs=kv_attn_kwargs,
                )

        joint = torch.cat([text, image], dim=1)
        if kv_cache_mode is not None:
            kv_attn_kwargs_single = {**kv_attn_kwargs, "num_txt_tokens": num_txt_tokens}
        else:
            kv_attn_kwargs_single = kv_attn_kwargs
        for index, block in enumerate(module.single_transformer_blocks):
            if kv_cache_mode is not None and kv_cache is not None:
                kv_attn_kwargs_single["kv_cache"] = kv_cache.get_single(index)
            if torch.is_grad_enabled() and module.gradient_checkpointing:
                joint = run_checkpointed(
                    module, block, joint, None, single_stream_mod, concat_rotary_emb, kv_attn_kwargs_single
                )
            else:
                joint = block(
                    hidden_states=joint,
                    encoder_hidden_states=None,
                    temb_mod=single_stream_mod,
                    image_rotary_emb=concat_rotary_emb,
                    joint_attention_kwargs=kv_attn_kwargs_single,
                )
        # Text (and, when extracting, reference) tokens feed nothing after the blocks.
        return (joint[:, num_txt_tokens + num_ref_dropped :, ...],)

    def postprocess(image: torch.Tensor) -> Any:
        output = module.proj_out(module.norm_out(image, temb))
        if kv_cache_mode == "extract":  # the forward hands the (now populated) KV cache back
            if not return_dict:
                return (output, kv_cache)
            return Flux2Transformer2DModelOutput(sample=output, kv_cache=kv_cache)
        return Flux2Transformer2DModelOutput(sample=output) if return_dict else (output,)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=noisy_tokens,
        encoder_hidden_states=None,
        temb=temb,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
    )
