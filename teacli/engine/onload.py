"""A module's own tensor read outside that module's forward, on the device the call computes on.

Extractors read some blocks' parameters without calling the block (the first block's scale_shift_table gives
PixArt's, Sana's and LTX's modulated input). Offloading moves a module's own tensors onto the device only in
that module's forward: under accelerate's sequential offload they sit on the meta device between calls, under
diffusers' group offloading on the CPU. `own_tensor` fetches the stored value and moves it; without offloading
it is the tensor itself (moving to its own device is free).
"""

from __future__ import annotations

import torch

from .diffusers_internals import accelerate_offloaded_tensor


def own_tensor(module: torch.nn.Module, name: str, device: torch.device) -> torch.Tensor:
    """`module.<name>` (a parameter or buffer of the module itself) on `device`, wherever offloading keeps it."""
    tensor = getattr(module, name)
    if tensor.device.type == "meta":
        stored = accelerate_offloaded_tensor(module, name)
        if stored is not None:
            tensor = stored
    return tensor.to(device)
