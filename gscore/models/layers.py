"""Building blocks shared by the model families: conv-BN-ReLU, weight init, and the staged body.

Every family here is "optional stem -> stages of blocks with a 2x2 max-pool (ceil mode) between
consecutive stages -> global pooling -> linear classifier"; ``StagedNet`` is that skeleton, so the
families only say which block they stack. state_dict keys: ``stem.*`` (when there is a stem),
``stages.{s}.{i}.*`` and ``classifier.*``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class ConvBNReLU(nn.Module):
    """conv3x3 (padding 1) -> BatchNorm2d (optional) -> ReLU -> Dropout: [B, C_in, H, W] -> [B, C_out, H, W].

    With batch norm the conv has no bias. Dropout with p=0 is an Identity; neither changes the state_dict.
    """

    def __init__(
        self, in_channels: int, out_channels: int, dropout: float = 0.0, batch_norm: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=not batch_norm)
        self.bn: nn.Module = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.relu = nn.ReLU()
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.relu(self.bn(self.conv(x))))


def init_weights(model: nn.Module) -> None:
    """He-normal (fan_out) convs, unit/zero batch norm, PyTorch default linears."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class StagedNet(nn.Module):
    """[B, C, H, W] -> logits [B, num_classes]: stem, stages of blocks, max-pools between stages, head.

    ``make_block(in_channels, out_channels)`` builds one block; stage s has ``blocks_per_stage[s]``
    blocks of width ``stage_widths[s]``. ``in_channels`` is the number of channels entering stage 0
    (after the stem, when there is one).
    """

    def __init__(
        self,
        in_channels: int,
        stage_widths: Sequence[int],
        blocks_per_stage: Sequence[int],
        make_block: Callable[[int, int], nn.Module],
        num_classes: int,
        stem: nn.Module | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if global_pool not in ("avg", "max"):
            raise ValueError(f"global_pool must be 'avg' or 'max', got {global_pool!r}")
        if stem is not None:
            self.stem = stem
        self.stage_widths = list(stage_widths)
        stages = []
        channels = in_channels
        for stage_width, blocks in zip(self.stage_widths, blocks_per_stage, strict=True):
            layers = []
            for _ in range(blocks):
                layers.append(make_block(channels, stage_width))
                channels = stage_width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(kernel_size=2, ceil_mode=True)
        self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "stem"):
            x = self.stem(x)
        for index, stage in enumerate(self.stages):
            if index > 0:
                x = self.pool(x)
            x = stage(x)
        return self.classifier(torch.flatten(self.global_pool(x), 1))
