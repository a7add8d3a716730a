"""A toy transformer and extractor whose modulated input the test scripts, to drive the hook."""

from __future__ import annotations

import torch
from diffusers.models.cache_utils import CacheMixin

from teacli import CacheContext, Decision, register_extractor


class ToyTransformer(torch.nn.Module, CacheMixin):
    """Dual-stream: the blocks add a learned offset to both streams and count their runs."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.tensor(1.5))
        self.block_runs = 0

    def blocks(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.block_runs += 1
        return image * 2 + self.offset, text - self.offset

    def forward(self, image, text, modulated, timestep=None):
        out_image, out_text = self.blocks(image, text)
        return out_image, out_text


class BareToyTransformer(ToyTransformer.__bases__[0]):
    """The same without CacheMixin, so it has no cache_context."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.tensor(1.5))
        self.block_runs = 0

    blocks = ToyTransformer.blocks
    forward = ToyTransformer.forward


def extract_toy(module, image, text, modulated, timestep=None):
    return CacheContext(
        modulated_input=modulated,
        hidden_states=image,
        encoder_hidden_states=text,
        temb=torch.zeros(1),
        run_transformer_blocks=lambda: module.blocks(image, text),
        postprocess=lambda out_image, out_text: (out_image, out_text),
        timestep=timestep,
    )


register_extractor("ToyTransformer", extract_toy)
register_extractor("BareToyTransformer", extract_toy)


def modulated_sequence(distances: list[float]) -> list[torch.Tensor]:
    """Constant tensors whose consecutive rel_l1 equals the given distances."""
    values = [1.0]
    for distance in distances:
        values.append(values[-1] * (1 + distance))
    return [torch.full((4,), value) for value in values]


IDENTITY = [1.0, 0.0]
MARKS = {Decision.COMPUTED: "C", Decision.CACHED: ".", Decision.FORCED: "F"}


def pattern(records) -> str:
    return "".join(MARKS[r.decision] for r in records)


def drive(model, distances, *, image_seed=0, timesteps=None):
    """Call the model once per modulated input; returns the outputs."""
    generator = torch.Generator().manual_seed(image_seed)
    outputs = []
    for index, modulated in enumerate(modulated_sequence(distances)):
        image, text = torch.randn(2, 3, generator=generator), torch.randn(5, generator=generator)
        timestep = None if timesteps is None else timesteps[index]
        outputs.append((image, text, model(image, text, modulated, timestep=timestep)))
    return outputs
