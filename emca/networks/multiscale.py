"""Multi-scale cross-attention blocks of XingGAN++ (EMSA and EMAS).

This project's reading of the 2025 paper (its body is not available; docs/xingganpp.md): the SA
(shape-guided appearance, "EMSA") and AS (appearance-guided shape, "EMAS") cross-attention of a Xing
block runs over several scales and sub-regions at once, and their results are fused:

- ``full``: XingGAN's attention, every query against all N = h * w keys;
- ``pool<f>``: keys and values average-pooled to a coarser pyramid level, ceil(h/f) x ceil(w/f) tokens
  (adaptive pooling, so sizes not divisible by f work), M < N: context at 1/f^2 of the cost;
- ``pyramid<f>``: queries, keys and values all average-pooled to the ceil(h/f) x ceil(w/f) level,
  attention computed there and its result upsampled bilinearly to the grid: a feature-pyramid level
  (coarse queries as well as coarse keys) at 1/f^4 of the cost, the other reading of "multi-scale";
- ``window<s>``: local attention inside s x s sub-regions. The windows tile the grid without overlap
  where s divides it; otherwise the last window of a row or column is shifted inward so that every
  window is a full s x s region of real tokens. Each query belongs to exactly one window (the one
  of the regular tiling, the shifted one for the remainder), so there is no padding, nothing to
  mask, and one backend call serves all windows: they are moved to the batch axis.

Every branch without EA goes through the attention backend (emca.networks.attention), so the
reference / sdpa / fused backends all apply; a branch with enhanced attention
(emca.networks.enhanced_attention) computes its matrices explicitly. The branch outputs are
fused by learned softmax weights (initialised equal: their mean) or by a 1x1 convolution over the
concatenated branches (initialised to the mean too), then gated by ``gamma`` as in XingGAN.
Which scales, windows, fusion and EA branches: ``model.generator.multi_scale`` / ``enhanced_attention``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emca.networks.cross_attention import MemoryKeys, XingAttention, from_tokens, to_tokens, with_memory
from emca.networks.enhanced_attention import EnhancedAttention

ScaleKind = Literal["full", "pool", "pyramid", "window"]
SCALE_KINDS: tuple[str, ...] = ("full", "pool", "pyramid", "window")
FUSIONS = ("softmax", "conv")


@dataclass(frozen=True)
class ScaleSpec:
    """One attention branch: ``kind`` and its ``size`` (pool factor or window side; 1 for full)."""

    kind: ScaleKind
    size: int = 1

    @property
    def name(self) -> str:
        return "full" if self.kind == "full" else f"{self.kind}{self.size}"


def pooled_size(height: int, width: int, factor: int) -> tuple[int, int]:
    return math.ceil(height / factor), math.ceil(width / factor)


def pool_tokens(tokens: Tensor, height: int, width: int, factor: int) -> Tensor:
    """Average-pool tokens of a height x width grid: (B, h*w, C) -> (B, ceil(h/f) * ceil(w/f), C)."""
    grid = F.adaptive_avg_pool2d(from_tokens(tokens, height, width), pooled_size(height, width, factor))
    return to_tokens(grid)


def window_starts(length: int, size: int, device: torch.device) -> Tensor:
    """First row (or column) of each window along one axis; the last is shifted inward to fit."""
    count = math.ceil(length / size)
    return torch.clamp(torch.arange(count, device=device) * size, max=length - min(size, length))


class WindowPartition:
    """The windows of a height x width token grid (see the module docstring).

    ``token_index`` (num_windows, T): the grid token at each window position, T = s_h * s_w with
    s_h = min(size, height), s_w = min(size, width). ``owner`` (N,): where each token's own result sits
    in the flattened (num_windows * T) window outputs; ``query_window`` (N,): its window.
    """

    def __init__(self, height: int, width: int, size: int, device: torch.device) -> None:
        window_height, window_width = min(size, height), min(size, width)
        row_starts, col_starts = window_starts(height, size, device), window_starts(width, size, device)
        rows = row_starts[:, None] + torch.arange(window_height, device=device)  # (windows down, s_h)
        cols = col_starts[:, None] + torch.arange(window_width, device=device)  # (windows across, s_w)
        index = rows[:, None, :, None] * width + cols[None, :, None, :]  # (down, across, s_h, s_w)
        self.num_windows = index.shape[0] * index.shape[1]
        self.window_tokens = window_height * window_width
        self.token_index = index.reshape(self.num_windows, self.window_tokens)

        def owned(length: int, starts: Tensor) -> tuple[Tensor, Tensor]:  # window and offset of each row/col
            window = torch.clamp(torch.arange(length, device=device) // size, max=len(starts) - 1)
            return window, torch.arange(length, device=device) - starts[window]

        row_window, row_offset = owned(height, row_starts)
        col_window, col_offset = owned(width, col_starts)
        self.query_window = (row_window[:, None] * len(col_starts) + col_window[None, :]).flatten()
        position = (row_offset[:, None] * window_width + col_offset[None, :]).flatten()
        self.owner = self.query_window * self.window_tokens + position

    def split(self, tokens: Tensor) -> Tensor:
        """(B, N, C) -> (B * num_windows, T, C), windows on the batch axis."""
        windows = tokens[:, self.token_index.flatten()]
        return windows.reshape(-1, self.window_tokens, tokens.shape[-1])

    def merge(self, windows: Tensor) -> Tensor:
        """(B * num_windows, T, C) -> (B, N, C): each token's result from the window that owns it."""
        return windows.reshape(-1, self.num_windows * self.window_tokens, windows.shape[-1])[:, self.owner]


class KeySet(NamedTuple):
    """What one branch attends over: ``query`` (B', N', Dk) against ``key`` (B', M, Dk) / ``value``
    (B', M, Dv); windows sit on the batch axis (B' = B * windows) and ``partition`` merges them back.
    ``context_query`` (B', L, Dk): the pooled queries EA takes its context rows from (pool branches);
    ``query_grid``: the pooled (rows, cols) of a pyramid branch's queries, whose result is upsampled."""

    query: Tensor
    key: Tensor
    value: Tensor
    context_query: Tensor | None
    partition: WindowPartition | None
    key_grid: tuple[int, int]  # the (rows, cols) of the key tokens before memory: the grid, pooled grid or window
    query_grid: tuple[int, int] | None = None


class AttentionScale(nn.Module):
    """One branch of the multi-scale cross-attention, with optional enhanced attention.

    forward(query (B, N, Dk), key (B, N, Dk), value (B, N, Dv) on a height x width grid, memory keys)
    -> softmax-attended values (B, N, Dv), before the gate. Branches without EA go through ``backend``.
    """

    def __init__(self, spec: ScaleSpec, backend: nn.Module, enhancement: EnhancedAttention | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.backend = backend
        self.enhancement = enhancement

    def key_set(
        self, query: Tensor, key: Tensor, value: Tensor, height: int, width: int, memory: MemoryKeys | None
    ) -> KeySet:
        """The branch's queries and key set; the memory joins every query's keys (the full grid, the pooled
        grid or each window)."""
        kind, size = self.spec.kind, self.spec.size
        if kind == "window":
            partition = WindowPartition(height, width, size, query.device)
            window_key, window_value = with_memory(partition.split(key), partition.split(value), memory)
            window_grid = (min(size, height), min(size, width))
            return KeySet(partition.split(query), window_key, window_value, None, partition, window_grid)
        context_query = None
        key_grid = (height, width)
        if kind == "pyramid":
            query, key, value = (pool_tokens(t, height, width, size) for t in (query, key, value))
            grid = pooled_size(height, width, size)
            return KeySet(query, *with_memory(key, value, memory), None, None, grid, grid)
        if kind == "pool":
            key, value = (pool_tokens(t, height, width, size) for t in (key, value))
            context_query = pool_tokens(query, height, width, size) if self.enhancement is not None else None
            key_grid = pooled_size(height, width, size)
        return KeySet(query, *with_memory(key, value, memory), context_query, None, key_grid)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, height: int, width: int, memory: MemoryKeys | None = None
    ) -> Tensor:
        keys = self.key_set(query, key, value, height, width, memory)
        if self.enhancement is not None:
            output = self.enhancement(keys.query, keys.key, keys.value, keys.context_query).output
        else:
            output = self.backend(keys.query, keys.key, keys.value)
        if keys.query_grid is not None:
            coarse = from_tokens(output, *keys.query_grid)
            return to_tokens(F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False))
        return output if keys.partition is None else keys.partition.merge(output)


class MultiScaleXingAttention(XingAttention):
    """XingAttention whose SA / AS attention runs over several scales (EMSA / EMAS), fused.

    The projections and the gate are XingAttention's, built first in the same order, so the shared weights
    line up with XingGAN's. Shapes as in :class:`~emca.networks.cross_attention.XingAttention`.

    Args (after XingAttention's):
        scales: the branches, at least one.
        fusion: ``softmax`` (learned weights over the branches) or ``conv`` (1x1 conv over their
            concatenation, C * len(scales) -> C, no bias); both start as the mean of the branches.
        enhanced_kinds: the branch kinds (``full``, ``pool``, ``window``) that get enhanced attention.
        enhanced_inner_channels, enhanced_heads, enhanced_over: EA's inner attention width, heads and axis.
    """

    def __init__(
        self,
        channels: int,
        query_key_channels: int,
        backend: nn.Module,
        *,
        scales: tuple[ScaleSpec, ...],
        fusion: str = "softmax",
        enhanced_kinds: tuple[str, ...] = (),
        enhanced_inner_channels: int = 16,
        enhanced_heads: int = 2,
        enhanced_over: str = "rows",
    ) -> None:
        super().__init__(channels, query_key_channels, backend)
        assert scales and fusion in FUSIONS, (scales, fusion)
        self.scales = nn.ModuleList(
            AttentionScale(
                spec,
                backend,
                EnhancedAttention(query_key_channels, enhanced_inner_channels, enhanced_heads, enhanced_over)
                if spec.kind in enhanced_kinds
                else None,
            )
            for spec in scales
        )
        self.fusion_mode = fusion
        # plain Parameters, so the generator's N(0, 0.02) initialisation leaves the mean-of-branches start
        if fusion == "softmax":
            self.scale_logits = nn.Parameter(torch.zeros(len(scales)))
        else:
            self.scale_mixing = nn.Parameter(torch.eye(channels).repeat(1, len(scales)) / len(scales))

    def attend(
        self, query: Tensor, key: Tensor, value: Tensor, height: int, width: int, memory: MemoryKeys | None
    ) -> Tensor:
        """Stacked SA / AS tokens -> the fused multi-scale attention (2B, N, C), before the gate."""
        attended = [scale(query, key, value, height, width, memory) for scale in self.scales]
        if self.fusion_mode == "softmax":
            weights = torch.softmax(self.scale_logits, 0).to(attended[0].dtype)
            return sum(weight * branch for weight, branch in zip(weights, attended, strict=True))
        return F.linear(torch.cat(attended, -1), self.scale_mixing.to(attended[0].dtype))
