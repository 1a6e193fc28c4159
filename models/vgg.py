"""Four-stage VGG variants of the paper (appendix A.2).

Layout (state_dict keys in brackets), for first-stage width w and ``convs_per_stage`` = 2 (VGG-9) or 3
(VGG-13):

    stage s in 0..3, width w * 2**s:  convs_per_stage x ConvBNReLU     [stages.{s}.{i}.conv / .bn]
        conv3x3 (no bias) -> BatchNorm2d -> ReLU -> Dropout(p)
    2x2 max-pool (ceil mode) between consecutive stages (3 pooling layers)
    global average pool -> Linear(8w, num_classes)                    [classifier]

Weight layers: 4 * convs_per_stage convs + 1 linear = 9 or 13. ReLU layers (measured neurons): 8 or 12, i.e.
960 (VGG-9, w=32) to 1440 neurons, as stated in the paper. Works on any input of at least 8x8.
"""

from __future__ import annotations

import torch
from torch import nn

CONVS_PER_STAGE = {9: 2, 13: 3}
NUM_STAGES = 4


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


class VGG(nn.Module):
    """Four-stage VGG: [B, in_channels, H, W] (H, W >= 8) -> logits [B, num_classes]."""

    def __init__(
        self, depth: int, width: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth not in CONVS_PER_STAGE:
            raise ValueError(f"VGG depth must be one of {sorted(CONVS_PER_STAGE)}, got {depth}")
        self.stage_widths = [width * 2**stage for stage in range(NUM_STAGES)]
        stages = []
        channels = in_channels
        for stage_width in self.stage_widths:
            layers = []
            for _ in range(CONVS_PER_STAGE[depth]):
                layers.append(ConvBNReLU(channels, stage_width, dropout))
                channels = stage_width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(kernel_size=2, ceil_mode=True)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, stage in enumerate(self.stages):
            if index > 0:
                x = self.pool(x)
            x = stage(x)
        return self.classifier(torch.flatten(self.global_pool(x), 1))
