"""What an extractor tells the TeaCache hook about one transformer call.

The hook never names a model: every model-specific step (embedding the inputs, finding the
modulated input, running the blocks, the output head) lives in an extractor that returns this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import TeacliError


class ExtractorContractError(TeacliError, TypeError):
    """An extractor returned a CacheContext the hook cannot use; the message says which field and why."""


@dataclass
class CacheContext:
    """Model-specific pieces of one transformer call.

    Attributes:
        modulated_input: the tensor whose relative L1 change decides caching; usually the first
            block's normalised and timestep-modulated image stream.
        hidden_states: the image/latent stream after preprocessing, before the blocks.
        encoder_hidden_states: the text stream for dual-stream models whose blocks return it and
            whose output needs it; None for single-stream models.
        temb: the timestep embedding.
        run_transformer_blocks: runs every block and returns `(hidden_states,)` or
            `(hidden_states, encoder_hidden_states)`, matching the streams given above.
        postprocess: turns the streams that `run_transformer_blocks` returned (passed positionally)
            into the transformer's usual return value.
        extra_states: anything else an extractor wants to carry (not read by the hook).
        timestep: the scalar timestep of this call, for the per-call record (optional).
        modulated_alternatives: other tensors the decision may be measured on, by name, for models
            whose published coefficients were fitted on a different input (Wan's ret-steps mode
            uses the time projection); a preset's `modulated_input` picks one.
    """

    modulated_input: torch.Tensor
    hidden_states: torch.Tensor
    encoder_hidden_states: torch.Tensor | None
    temb: torch.Tensor
    run_transformer_blocks: Callable[[], tuple[torch.Tensor, ...]]
    postprocess: Callable[..., Any]
    extra_states: dict[str, Any] | None = None
    timestep: float | None = None
    modulated_alternatives: dict[str, torch.Tensor] | None = None

    def select_modulated_input(self, name: str | None) -> torch.Tensor:
        """The tensor the decision is measured on: `modulated_input`, or the named alternative."""
        if name is None:
            return self.modulated_input
        alternatives = self.modulated_alternatives or {}
        if name not in alternatives:
            offered = ", ".join(sorted(alternatives)) or "none"
            raise ExtractorContractError(
                f"this extractor offers no modulated input named {name!r} (offered: {offered}); "
                "fix the preset's modulated_input"
            )
        return alternatives[name]

    @property
    def streams(self) -> tuple[torch.Tensor, ...]:
        """The block inputs whose residuals are cached, in `run_transformer_blocks` order."""
        if self.encoder_hidden_states is None:
            return (self.hidden_states,)
        return (self.hidden_states, self.encoder_hidden_states)

    def validate(self) -> None:
        """Raise ExtractorContractError naming the first field that breaks the contract."""
        for name in ("modulated_input", "hidden_states", "temb"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise ExtractorContractError(f"CacheContext.{name} must be a torch.Tensor, got {type(value).__name__}")
        if self.encoder_hidden_states is not None and not isinstance(self.encoder_hidden_states, torch.Tensor):
            raise ExtractorContractError(
                "CacheContext.encoder_hidden_states must be a torch.Tensor or None (single-stream), "
                f"got {type(self.encoder_hidden_states).__name__}"
            )
        if self.modulated_input.numel() == 0:
            raise ExtractorContractError("CacheContext.modulated_input is empty: extract it from the first block")
        if not torch.is_floating_point(self.modulated_input):
            raise ExtractorContractError(
                f"CacheContext.modulated_input must be floating point, got {self.modulated_input.dtype}"
            )
        for name in ("run_transformer_blocks", "postprocess"):
            if not callable(getattr(self, name)):
                raise ExtractorContractError(f"CacheContext.{name} must be callable")
        if self.extra_states is not None and not isinstance(self.extra_states, dict):
            raise ExtractorContractError("CacheContext.extra_states must be a dict or None")

    def check_block_outputs(self, outputs: Any) -> tuple[torch.Tensor, ...]:
        """Check what run_transformer_blocks returned: one tensor per stream, same shapes as the inputs."""
        if not isinstance(outputs, tuple) or not all(isinstance(t, torch.Tensor) for t in outputs):
            raise ExtractorContractError(
                "run_transformer_blocks must return a tuple of tensors: (hidden_states,) or "
                f"(hidden_states, encoder_hidden_states); got {type(outputs).__name__}"
            )
        streams = self.streams
        if len(outputs) != len(streams):
            raise ExtractorContractError(
                f"run_transformer_blocks returned {len(outputs)} stream(s) but the context has "
                f"{len(streams)} (encoder_hidden_states is {'set' if len(streams) == 2 else 'None'})"
            )
        for index, (output, given) in enumerate(zip(outputs, streams)):
            if output.shape != given.shape:
                raise ExtractorContractError(
                    f"run_transformer_blocks stream {index} has shape {tuple(output.shape)}, but its input "
                    f"had {tuple(given.shape)}: a residual needs both the same shape"
                )
        return outputs
