"""Densely connected co-attention fusion of XingGAN++: the fusion head reads every block, not the last.

This project's readings of the 2025 paper (docs/xingganpp.md), ``model.generator.dense_fusion.mode``:

- ``concat``: the appearance features of all K blocks are concatenated and reduced back to C channels by
  a 1x1 convolution, the shape features (cat(appearance, shape), 2C each) likewise to 2C. The
  reductions start as "take the last block" (identity on its slice, zero elsewhere);
- ``gated``: the last block's features plus each earlier block's, let through by a per-pixel,
  per-channel sigmoid gate computed from that block and the last, times a learned weight per block
  that starts at zero.

Either way XingGAN's co-attention fusion head (emca.networks.generator.CoAttentionFusion, unchanged)
turns the result into the 20 candidates and 21 masks, an untrained dense fusion is XingGAN's head, and
the earlier stages' contributions grow from zero in training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

DENSE_MODES = ("concat", "gated")


class ConcatStageReduction(nn.Conv2d):
    """forward([stage (B, C, h, w)] * K) -> (B, C, h, w): a 1x1 conv of their concatenation (K * C -> C),
    initialised to pass the last stage through."""

    def __init__(self, num_stages: int, channels: int) -> None:
        super().__init__(num_stages * channels, channels, 1)
        with torch.no_grad():
            self.weight.zero_()
            self.bias.zero_()
            self.weight[:, (num_stages - 1) * channels :, 0, 0] = torch.eye(channels)

    def forward(self, stages: list[Tensor]) -> Tensor:  # type: ignore[override]
        return super().forward(torch.cat(stages, 1))


class GatedStageSum(nn.Module):
    """forward([stage (B, C, h, w)] * K) -> (B, C, h, w):
    last + sum_k weight[k] * sigmoid(gate_k(cat(stage_k, last))) * stage_k over the K - 1 earlier stages."""

    def __init__(self, num_stages: int, channels: int) -> None:
        super().__init__()
        self.gates = nn.ModuleList(nn.Conv2d(2 * channels, channels, 1) for _ in range(num_stages - 1))
        # zero: an untrained gated sum is the last stage (a plain Parameter, so no init scheme touches it)
        self.stage_weights = nn.Parameter(torch.zeros(num_stages - 1))

    def forward(self, stages: list[Tensor]) -> Tensor:
        *earlier, last = stages
        fused = last
        for weight, gate, stage in zip(self.stage_weights, self.gates, earlier, strict=True):
            fused = fused + weight * torch.sigmoid(gate(torch.cat([stage, last], 1))) * stage
        return fused


class DenseStageAggregation(nn.Module):
    """forward([(appearance (B, Ca, h, w), shape (B, Cs, h, w))] * num_stages) -> (appearance (B, Ca, h, w),
    shape (B, Cs, h, w)), each stream mixed across all stages by ``mode`` (``concat`` or ``gated``)."""

    def __init__(self, num_stages: int, appearance_channels: int, shape_channels: int, mode: str = "concat") -> None:
        super().__init__()
        assert num_stages >= 1 and mode in DENSE_MODES, (num_stages, mode)
        self.num_stages = num_stages
        stream = ConcatStageReduction if mode == "concat" else GatedStageSum
        self.appearance_reduction = stream(num_stages, appearance_channels)
        self.shape_reduction = stream(num_stages, shape_channels)

    def forward(self, stages: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        assert len(stages) == self.num_stages, (len(stages), self.num_stages)
        appearance = self.appearance_reduction([appearance for appearance, _ in stages])
        shape = self.shape_reduction([shape for _, shape in stages])
        return appearance, shape
