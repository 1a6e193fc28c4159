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

from functools import partial

from gscore.models.layers import ConvBNReLU, StagedNet

CONVS_PER_STAGE = {9: 2, 13: 3}
NUM_STAGES = 4


class VGG(StagedNet):
    """Four-stage VGG: [B, in_channels, H, W] (H, W >= 8) -> logits [B, num_classes]."""

    def __init__(
        self, depth: int, width: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        if depth not in CONVS_PER_STAGE:
            raise ValueError(f"VGG depth must be one of {sorted(CONVS_PER_STAGE)}, got {depth}")
        super().__init__(
            in_channels,
            stage_widths=[width * 2**stage for stage in range(NUM_STAGES)],
            blocks_per_stage=[CONVS_PER_STAGE[depth]] * NUM_STAGES,
            make_block=partial(ConvBNReLU, dropout=dropout),
            num_classes=num_classes,
        )
