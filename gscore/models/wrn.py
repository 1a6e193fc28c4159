"""Four-stage Wide-ResNet variants of the paper (appendix A.2).

Layout (state_dict keys in brackets), for first-stage width w and ``blocks_per_stage`` = 2 (WRN-18) or 3
(WRN-26):

    stem: conv3x3 (no bias) -> BatchNorm2d, no ReLU                    [stem.conv / stem.bn]
    stage s in 0..3, width w * 2**s: blocks_per_stage x BasicBlock    [stages.{s}.{b}.conv1/bn1/conv2/bn2]
        post-activation basic block (He et al. 2016):
        out = ReLU(BN(conv3x3(Dropout(ReLU(BN(conv3x3(x)))))) + shortcut(x))
        shortcut: identity, zero-padded with extra channels in the first block of stages 1..3
        (parameter-free, He et al.'s CIFAR "option A")
    2x2 max-pool (ceil mode) between consecutive stages (3 pooling layers, as for the VGG variants)
    global average pool -> Linear(8w, num_classes)                    [classifier]

Weight layers: 1 stem conv + 4 * blocks_per_stage * 2 convs + 1 linear = 18 or 26. ReLU layers (measured
neurons): 2 per block, all at the stage width, i.e. 1920 (WRN-18, w=32) to 2880 neurons, exactly the counts
stated in the paper (a stem ReLU would add w more, which is why the stem has none). Dropout sits between
the two convs of a block, as in Zagoruyko & Komodakis. Works on any input of at least 8x8.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from gscore.models.layers import StagedNet
from gscore.models.vgg import NUM_STAGES

BLOCKS_PER_STAGE = {18: 2, 26: 3}


class BasicBlock(nn.Module):
    """Post-activation basic block, stride 1: [B, C_in, H, W] -> [B, C_out, H, W] with C_out >= C_in."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("BasicBlock cannot reduce channels")
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.relu1(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        shortcut = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels)) if self.extra_channels else x
        return self.relu2(out + shortcut)


class Stem(nn.Module):
    """conv3x3 (no bias) -> BatchNorm2d: [B, C_in, H, W] -> [B, w, H, W]."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class WideResNet(StagedNet):
    """Four-stage Wide ResNet: [B, in_channels, H, W] (H, W >= 8) -> logits [B, num_classes]."""

    def __init__(
        self, depth: int, width: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"WRN depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
        super().__init__(
            width,
            stage_widths=[width * 2**stage for stage in range(NUM_STAGES)],
            blocks_per_stage=[BLOCKS_PER_STAGE[depth]] * NUM_STAGES,
            make_block=partial(BasicBlock, dropout=dropout),
            num_classes=num_classes,
            stem=Stem(in_channels, width),
        )
