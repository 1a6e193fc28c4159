"""Small models for small inputs (e.g. 1x8x8 digits): an MLP and a small CNN."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from gscore.models.layers import ConvBNReLU, StagedNet


class LinearReLU(nn.Module):
    """Linear -> ReLU -> Dropout: [B, F_in] -> [B, F_out]."""

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.relu = nn.ReLU()
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.relu(self.linear(x)))


class MLP(nn.Module):
    """[B, *] flattened to [B, in_features] -> hidden LinearReLU layers -> logits [B, num_classes].

    Keys: ``layers.{i}.linear``, ``classifier``.
    """

    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        sizes = [in_features, *hidden]
        self.layers = nn.Sequential(
            *(LinearReLU(a, b, dropout) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        )
        self.classifier = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(torch.flatten(x, 1)))


def stage_sizes(depth: int, max_stages: int = 3) -> list[int]:
    """Conv layers per stage: ``depth`` split as evenly as possible over min(depth, 3) stages, extras first.

    >>> stage_sizes(1), stage_sizes(2), stage_sizes(4), stage_sizes(8)
    ([1], [1, 1], [2, 1, 1], [3, 3, 2])
    """
    stages = min(depth, max_stages)
    base, extra = divmod(depth, stages)
    return [base + 1 if index < extra else base for index in range(stages)]


class SmallCNN(StagedNet):
    """[B, in_channels, H, W] (H, W >= 4) -> logits [B, num_classes].

    ``depth`` ConvBNReLU layers in up to 3 stages of widths w, 2w, 4w with a 2x2 max-pool (ceil mode) between
    stages, then global average or max pooling and a linear classifier. Keys: ``stages.{s}.{i}.conv/.bn``,
    ``classifier``. Dropout after every ReLU.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        depth: int,
        num_classes: int,
        dropout: float = 0.0,
        batch_norm: bool = True,
        global_pool: str = "avg",
    ) -> None:
        sizes = stage_sizes(depth)
        super().__init__(
            in_channels,
            stage_widths=[width * 2**stage for stage in range(len(sizes))],
            blocks_per_stage=sizes,
            make_block=partial(ConvBNReLU, dropout=dropout, batch_norm=batch_norm),
            num_classes=num_classes,
            global_pool=global_pool,
        )
