"""Per-channel input normalization applied outside the model (never part of its state_dict)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gscore.errors import SpecError
from gscore.models.spec import BaseArchSpec, InputNormalization, parse_arch_spec


class Normalize(nn.Module):
    """``(x - mean[c]) / std[c]`` for x of shape [B, C, *spatial] (or [B, C]); integer x is cast to float32.

    ``mean`` and ``std`` are non-persistent buffers: they follow ``.to(device)`` but never appear in
    ``state_dict()``, so ``nn.Sequential(norm, model)`` loads the same checkpoints as ``model``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_values, std_values = [float(v) for v in mean], [float(v) for v in std]
        if not mean_values or len(mean_values) != len(std_values):
            raise ValueError(
                f"mean and std need the same non-zero length, got {len(mean_values)} and {len(std_values)}"
            )
        if not all(math.isfinite(v) for v in mean_values) or not all(
            math.isfinite(v) and v > 0 for v in std_values
        ):
            raise ValueError("mean must be finite and std finite and > 0")
        self.register_buffer("mean", torch.tensor(mean_values, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std_values, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():  # e.g. uint8 pixels: no rescaling here, only a float cast
            x = x.float()
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = self.mean.to(dtype=x.dtype).view(shape)
        std = self.std.to(dtype=x.dtype).view(shape)
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


def input_normalization(
    spec: BaseArchSpec | dict[str, Any] | str,
    dataset_default: tuple[Sequence[float], Sequence[float]] | None,
) -> Normalize | None:
    """The Normalize to put in front of the model, or None.

    ``spec.input`` decides: ``"dataset"`` (default) -> ``dataset_default`` (None when the dataset has no
    constants); ``None`` -> no normalization; ``{"mean", "std"}`` -> those values (an explicit value wins).
    Raises SpecError when the dataset's constants do not have one value per ``spec.in_channels``.
    """
    spec = parse_arch_spec(spec)
    setting = spec.input
    if setting is None:
        return None
    if isinstance(setting, InputNormalization):
        return Normalize(setting.mean, setting.std)
    if dataset_default is None:
        return None
    mean, std = dataset_default
    channels = getattr(spec, "in_channels", None)
    if channels is not None and len(mean) != channels:
        raise SpecError(
            f"the dataset's default normalization has {len(mean)} channel(s) but the model takes {channels}; "
            "fix arch.in_channels or set arch.input explicitly (null for none)",
            field="arch.in_channels" if "in_channels" in type(spec).model_fields else "arch.input",
        )
    return Normalize(mean, std)
