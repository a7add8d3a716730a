"""Z-Image (Turbo and base) and the Omni variant: ZImageTransformer2DModel.

Mirrors ZImageTransformer2DModel.forward of diffusers 0.42: per-image lists in and out, patchify,
the modulated noise refiner on the image tokens, the unmodulated context refiner on the caption
(and SigLIP refiner in omni mode), the unified [image, caption] (omni: [caption, images, siglip])
sequence, the main layers with ControlNet residuals added after the blocks they name, then the
final layer and unpatchify. Everything up to the unified sequence runs on every call; only the
main layers are skipped on a cached call, as in vllm-omni's extract_zimage_context.

The modulated input is the first main layer's attention input, attention_norm1(unified) times
(1 + scale_msa) from its adaLN, exactly as vllm-omni's Z-Image TeaCache extractor takes it: the
main layers are what a cached call skips, and this is the first thing they compute. In omni mode
the scale is chosen per token (noisy vs clean), as the block itself does.

ZImagePipeline batches CFG (prompt and negative prompt in one call) and sets no cache_context, so
every call lands in the one default branch. `t` runs from 0 (noise) to 1 (clean); the record keeps
1 - t, the noise level, so it falls over a generation like every other family's timestep.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_z_image import select_per_token

from teacli.engine.context import CacheContext
from teacli.engine.diffusers_internals import run_checkpointed
from teacli.engine.registry import extractor_for


@extractor_for("ZImageTransformer2DModel", lora_kwargs="joint_attention_kwargs")
def extract_z_image_context(
    module: torch.nn.Module,
    x: list[torch.Tensor] | list[list[torch.Tensor]],
    t: torch.Tensor,
    cap_feats: list[torch.Tensor] | list[list[torch.Tensor]],
    return_dict: bool = True,
    controlnet_block_samples: dict[int, torch.Tensor] | None = None,
    siglip_feats: list[list[torch.Tensor]] | None = None,
    image_noise_mask: list[list[int]] | None = None,
    patch_size: int = 2,
    f_patch_size: int = 1,
    joint_attention_kwargs: dict[str, Any] | None = None,  # only its LoRA `scale`, applied by the hook
) -> CacheContext:
    assert patch_size in module.all_patch_size and f_patch_size in module.all_f_patch_size
    omni_mode = isinstance(x[0], list)
    device = x[0][-1].device if omni_mode else x[0].device
    recorded_timestep = 1.0 - float(t.flatten()[0])

    if omni_mode:
        # Dual embeddings: noisy tokens at t, clean (condition) tokens at t = 1.
        t_noisy = module.t_embedder(t * module.t_scale).type_as(x[0][-1])
        t_clean = module.t_embedder(torch.ones_like(t) * module.t_scale).type_as(x[0][-1])
        adaln_input = None
    else:
        adaln_input = module.t_embedder(t * module.t_scale).type_as(x[0])
        t_noisy = t_clean = None

    if omni_mode:
        (
            x,
            cap_feats,
            siglip_feats,
            x_size,
            x_pos_ids,
            cap_pos_ids,
            siglip_pos_ids,
            x_pad_mask,
            cap_pad_mask,
            siglip_pad_mask,
            x_pos_offsets,
            x_noise_mask,
            cap_noise_mask,
            siglip_noise_mask,
        ) = module.patchify_and_embed_omni(x, cap_feats, siglip_feats, patch_size, f_patch_size, image_noise_mask)
    else:
        x, cap_feats, x_size, x_pos_ids, cap_pos_ids, x_pad_mask, cap_pad_mask = module.patchify_and_embed(
            x, cap_feats, patch_size, f_patch_size
        )
        x_pos_offsets = x_noise_mask = cap_noise_mask = siglip_noise_mask = None

    # Image tokens: embed and refine (modulated by the timestep).
    x_seqlens = [len(xi) for xi in x]
    x = module.all_x_embedder[f"{patch_size}-{f_patch_size}"](torch.cat(x, dim=0))
    x, x_freqs, x_mask, _, x_noise_tensor = module._prepare_sequence(
        list(x.split(x_seqlens, dim=0)), x_pos_ids, x_pad_mask, module.x_pad_token, x_noise_mask, device
    )
    for layer in module.noise_refiner:
        x = _call_layer(module, layer, x, x_mask, x_freqs, adaln_input, x_noise_tensor, t_noisy, t_clean)

    # Caption tokens: embed and refine (no modulation).
    cap_seqlens = [len(ci) for ci in cap_feats]
    cap_feats = module.cap_embedder(torch.cat(cap_feats, dim=0))
    cap_feats, cap_freqs, cap_mask, _, _ = module._prepare_sequence(
        list(cap_feats.split(cap_seqlens, dim=0)), cap_pos_ids, cap_pad_mask, module.cap_pad_token, None, device
    )
    for layer in module.context_refiner:
        cap_feats = _call_layer(module, layer, cap_feats, cap_mask, cap_freqs)

    # SigLIP tokens (omni only): embed and refine (no modulation).
    siglip_seqlens = siglip_freqs = None
    if omni_mode and siglip_feats[0] is not None and module.siglip_embedder is not None:
        siglip_seqlens = [len(si) for si in siglip_feats]
        siglip_feats = module.siglip_embedder(torch.cat(siglip_feats, dim=0))
        siglip_feats, siglip_freqs, siglip_mask, _, _ = module._prepare_sequence(
            list(siglip_feats.split(siglip_seqlens, dim=0)),
            siglip_pos_ids,
            siglip_pad_mask,
            module.siglip_pad_token,
            None,
            device,
        )
        for layer in module.siglip_refiner:
            siglip_feats = _call_layer(module, layer, siglip_feats, siglip_mask, siglip_freqs)

    unified, unified_freqs, unified_mask, unified_noise_tensor = module._build_unified_sequence(
        x,
        x_freqs,
        x_seqlens,
        x_noise_mask,
        cap_feats,
        cap_freqs,
        cap_seqlens,
        cap_noise_mask,
        siglip_feats,
        siglip_freqs,
        siglip_seqlens,
        siglip_noise_mask,
        omni_mode,
        device,
    )
    layer_args = (unified_mask, unified_freqs, adaln_input, unified_noise_tensor, t_noisy, t_clean)
    modulated_input = _attention_input(module.layers[0], unified, adaln_input, unified_noise_tensor, t_noisy, t_clean)

    def run_transformer_blocks() -> tuple[torch.Tensor]:
        hidden = unified
        for layer_idx, layer in enumerate(module.layers):
            hidden = _call_layer(module, layer, hidden, *layer_args)
            if controlnet_block_samples is not None and layer_idx in controlnet_block_samples:
                hidden = hidden + controlnet_block_samples[layer_idx]
        return (hidden,)

    def postprocess(hidden: torch.Tensor) -> Any:
        final_layer = module.all_final_layer[f"{patch_size}-{f_patch_size}"]
        if omni_mode:
            hidden = final_layer(hidden, noise_mask=unified_noise_tensor, c_noisy=t_noisy, c_clean=t_clean)
        else:
            hidden = final_layer(hidden, c=adaln_input)
        # unpatchify writes into the list it is given: a fresh one per call keeps `hidden` intact.
        output = module.unpatchify(list(hidden.unbind(dim=0)), x_size, patch_size, f_patch_size, x_pos_offsets)
        return (output,) if not return_dict else Transformer2DModelOutput(sample=output)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=unified,
        encoder_hidden_states=None,  # one unified stream: captions ride in it
        temb=adaln_input if adaln_input is not None else t_noisy,
        run_transformer_blocks=run_transformer_blocks,
        postprocess=postprocess,
        timestep=recorded_timestep,
    )


def _call_layer(module: torch.nn.Module, layer: torch.nn.Module, *args: Any) -> torch.Tensor:
    if torch.is_grad_enabled() and module.gradient_checkpointing:
        return run_checkpointed(module, layer, *args)
    return layer(*args)


def _attention_input(
    block: torch.nn.Module,
    hidden: torch.Tensor,
    adaln_input: torch.Tensor | None,
    noise_mask: torch.Tensor | None,
    adaln_noisy: torch.Tensor | None,
    adaln_clean: torch.Tensor | None,
) -> torch.Tensor:
    """What ZImageTransformerBlock.forward feeds its attention: attention_norm1(x) * scale_msa."""
    if noise_mask is not None:
        scale_noisy = 1.0 + block.adaLN_modulation(adaln_noisy).chunk(4, dim=1)[0]
        scale_clean = 1.0 + block.adaLN_modulation(adaln_clean).chunk(4, dim=1)[0]
        scale_msa = select_per_token(scale_noisy, scale_clean, noise_mask, hidden.shape[1])
    else:
        scale_msa = 1.0 + block.adaLN_modulation(adaln_input).unsqueeze(1).chunk(4, dim=2)[0]
    return block.attention_norm1(hidden) * scale_msa
