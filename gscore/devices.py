"""Where computations run: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch

from gscore.errors import SpecError


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a CUDA device without a GPU is a clear SpecError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"device {device!r} was requested but no CUDA device is available", field="device")
    if device == "cpu" or device.startswith("cuda"):
        return torch.device(device)
    raise SpecError(f"device must be one of auto, cpu, cuda (got {device!r})", field="device")
