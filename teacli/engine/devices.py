"""Moving residuals between devices and waiting for a device, so timings measure finished work."""

from __future__ import annotations

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device, so wall-clock times measure finished work."""
    # The next call's rel_l1 .item() waits for this one anyway, so waiting here costs nothing and
    # makes the per-call seconds true on GPUs.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a residual between the compute device and the cache device, the exact values kept."""
    if tensor.device == device:
        return tensor
    # GPU -> host lands in pinned memory when non_blocking (torch pins the copy), and pinned host -> GPU
    # is asynchronous; both copies are queued on the current stream, so the order of use is kept.
    if tensor.device.type == "cuda" and device.type == "cpu":
        return tensor.to(device, non_blocking=True)
    return tensor.to(device, non_blocking=tensor.device.type == "cpu" and tensor.is_pinned())
