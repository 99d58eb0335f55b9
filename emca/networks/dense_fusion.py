"""Densely connected co-attention fusion of XingGAN++: the fusion head reads every block, not the last.

This project's reading of the 2025 paper (docs/xingganpp.md): the appearance features of all K
blocks are concatenated and reduced back to C channels by a 1x1 convolution, the shape features
(cat(appearance, shape), 2C each) likewise to 2C, and XingGAN's co-attention fusion head
(emca.networks.generator.CoAttentionFusion, unchanged) turns the result into the 20 candidates and 21
masks. The reductions start as "take the last block" (identity on its slice, zero elsewhere), so an
untrained dense fusion is XingGAN's head, and the earlier stages' weights grow from zero in training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def last_stage_reduction(num_stages: int, channels: int) -> nn.Conv2d:
    """1x1 conv (num_stages * channels -> channels) initialised to pass the last stage through."""
    reduction = nn.Conv2d(num_stages * channels, channels, 1)
    with torch.no_grad():
        reduction.weight.zero_()
        reduction.bias.zero_()
        reduction.weight[:, (num_stages - 1) * channels :, 0, 0] = torch.eye(channels)
    return reduction


class DenseStageAggregation(nn.Module):
    """forward([(appearance (B, Ca, h, w), shape (B, Cs, h, w))] * num_stages) -> (appearance (B, Ca, h, w),
    shape (B, Cs, h, w)), each a learned 1x1 mix of that stream across all stages."""

    def __init__(self, num_stages: int, appearance_channels: int, shape_channels: int) -> None:
        super().__init__()
        assert num_stages >= 1, num_stages
        self.num_stages = num_stages
        self.appearance_reduction = last_stage_reduction(num_stages, appearance_channels)
        self.shape_reduction = last_stage_reduction(num_stages, shape_channels)

    def forward(self, stages: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        assert len(stages) == self.num_stages, (len(stages), self.num_stages)
        appearance = self.appearance_reduction(torch.cat([appearance for appearance, _ in stages], 1))
        shape = self.shape_reduction(torch.cat([shape for _, shape in stages], 1))
        return appearance, shape
