"""Multi-scale cross-attention blocks of XingGAN++ (EMSA and EMAS).

This project's reading of the 2025 paper (its body is not available; docs/xingganpp.md): the SA
(shape-guided appearance, "EMSA") and AS (appearance-guided shape, "EMAS") cross-attention of a Xing
block runs over several scales and sub-regions at once, and their results are fused:

- ``full``: XingGAN's attention, every query against all N = h * w keys;
- ``pool<f>``: keys and values average-pooled to a coarser pyramid level, ceil(h/f) x ceil(w/f) tokens
  (adaptive pooling, so sizes not divisible by f work), M < N: context at 1/f^2 of the cost;
- ``window<s>``: local attention inside s x s sub-regions. The windows tile the grid without overlap
  where s divides it; otherwise the last window of a row or column is shifted inward so that every
  window is a full s x s region of real tokens. Each query belongs to exactly one window (the one
  of the regular tiling, the shifted one for the remainder), so there is no padding, nothing to
  mask, and one backend call serves all windows: they are moved to the batch axis.

Every branch without EA goes through the attention backend (``attend`` of the interface in
emca.networks.attention), so the reference / sdpa / fused backends all apply; a branch with enhanced
attention (emca.networks.enhanced_attention) computes its matrices explicitly. The branch outputs are
fused by learned softmax weights (initialised equal: their mean) or by a 1x1 convolution over the
concatenated branches (initialised to the mean too), then gated by the block's ``gamma`` as in XingGAN.
Which scales, windows, fusion and EA branches: ``model.generator.multi_scale`` / ``enhanced_attention``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emca.errors import ConfigError
from emca.networks.attention import CrossAttention
from emca.networks.enhanced_attention import EnhancedAttention, RefinedAttention, correlation
from emca.networks.generator import AttentionInputs, ExtraKeys, XingBlock, append_extra_keys, from_tokens, to_tokens

ScaleKind = Literal["full", "pool", "window"]
SCALE_KINDS: tuple[str, ...] = ("full", "pool", "window")
FUSIONS = ("softmax", "conv")


class ScaleRecorder(Protocol):
    """Receives the attention of chosen queries (see emca.networks.attention_recording)."""

    query_tokens: Tensor  # (Q,) flat grid indices of the queries to record

    def __call__(self, scale: str, attention: Tensor, raw: Tensor, refined: Tensor | None) -> None:
        """attention softmax(E'), raw E and refined E' (None without EA) rows, each (2B, Q, hk, wk)."""


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


class AttentionScale(nn.Module):
    """One branch of the multi-scale cross-attention, with optional enhanced attention.

    forward(query (B, N, Dk), key (B, N, Dk), value (B, N, Dv) on a height x width grid, backend)
    -> softmax-attended values (B, N, Dv), before the gate.
    """

    def __init__(self, spec: ScaleSpec, enhancement: EnhancedAttention | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.enhancement = enhancement
        self.recorder: ScaleRecorder | None = None  # set only inside emca.networks.attention_recording

    def attend(
        self, query: Tensor, key: Tensor, value: Tensor, context_query: Tensor | None, backend: CrossAttention
    ) -> tuple[Tensor, RefinedAttention | None]:
        """(B', N', Dk), (B', M, Dk), (B', M, Dv) -> output (B', N', Dv) and, with EA or while recording,
        the explicit matrices."""
        if self.enhancement is not None:
            refined = self.enhancement(query, key, value, context_query)
            return refined.output, refined
        output = backend.attend(query, key, value)
        if self.recorder is None:
            return output, None
        raw = correlation(query, key)  # only for the figures
        return output, RefinedAttention(raw, raw, output)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        height: int,
        width: int,
        backend: CrossAttention,
        extra: ExtraKeys | None = None,
    ) -> Tensor:
        """``extra`` keys / values (personalisation's subject tokens) join every query's key set: the full
        grid, the pooled grid, or each window."""
        kind, size = self.spec.kind, self.spec.size
        if kind == "window":
            partition = WindowPartition(height, width, size, query.device)
            windows = partition.num_windows
            window_extra = None if extra is None else ExtraKeys(*(t.repeat_interleave(windows, 0) for t in extra))
            window_key, window_value = append_extra_keys(partition.split(key), partition.split(value), window_extra)
            output, matrices = self.attend(partition.split(query), window_key, window_value, None, backend)
            if matrices is not None:
                self._record(
                    matrices,
                    lambda rows, tokens, fill: self._window_maps(rows, tokens, fill, partition, height, width),
                    height * width,
                )
            return partition.merge(output)
        context_query = None
        key_grid = (height, width)
        if kind == "pool":
            key, value = (pool_tokens(t, height, width, size) for t in (key, value))
            context_query = pool_tokens(query, height, width, size) if self.enhancement is not None else None
            key_grid = pooled_size(height, width, size)
        key, value = append_extra_keys(key, value, extra)
        output, matrices = self.attend(query, key, value, context_query, backend)
        if matrices is not None:
            self._record(matrices, lambda rows, tokens, fill: rows[:, tokens].unflatten(-1, key_grid), height * width)
        return output

    def _record(
        self, matrices: RefinedAttention, key_maps: Callable[[Tensor, Tensor, float], Tensor], num_tokens: int
    ) -> None:
        """Hand the recorder the rows of its query tokens as key-grid maps (2B, Q, hk, wk)."""
        if self.recorder is None:
            return
        tokens = self.recorder.query_tokens.to(matrices.raw.device)
        if tokens.min() < 0 or tokens.max() >= num_tokens:
            raise ConfigError(
                f"record_attention: query tokens {tokens.tolist()} must index the block grid of "
                f"{num_tokens} tokens (row * width + column at 1/4 resolution)."
            )
        with torch.no_grad():
            attention = key_maps(torch.softmax(matrices.refined, -1), tokens, 0.0)
            raw = key_maps(matrices.raw, tokens, float("nan"))
            refined = key_maps(matrices.refined, tokens, float("nan")) if self.enhancement is not None else None
        self.recorder(self.spec.name, attention, raw, refined)

    @staticmethod
    def _window_maps(
        rows: Tensor, tokens: Tensor, fill: float, partition: WindowPartition, height: int, width: int
    ) -> Tensor:
        """Window rows (B * windows, T, T) of the query ``tokens`` (Q,) -> full-grid maps (B, Q, h, w),
        ``fill`` outside each query's window."""
        per_window = rows.reshape(-1, partition.num_windows, partition.window_tokens, partition.window_tokens)
        windows = partition.query_window[tokens]
        positions = partition.owner[tokens] - windows * partition.window_tokens
        selected = per_window[:, windows, positions]  # (B, Q, T)
        maps = selected.new_full((*selected.shape[:2], height * width), fill)
        maps.scatter_(-1, partition.token_index[windows].expand_as(selected), selected)
        return maps.unflatten(-1, (height, width))


class MultiScaleXingBlock(XingBlock):
    """A Xing block whose SA / AS attention runs over several scales (EMSA / EMAS), fused.

    The conv branches, the projections and the gate are XingBlock's, built first in the same order, so
    the block's shared weights line up with XingGAN's. Shapes as in :class:`XingBlock`.

    Args (after XingBlock's):
        scales: the branches, at least one.
        fusion: ``softmax`` (learned weights over the branches) or ``conv`` (1x1 conv over their
            concatenation, C * len(scales) -> C, no bias); both start as the mean of the branches.
        enhanced_kinds: the branch kinds (``full``, ``pool``, ``window``) that get enhanced attention.
        enhanced_inner_channels, enhanced_heads: EA's inner attention width and heads.
    """

    def __init__(
        self,
        shape_in_channels: int,
        channels: int,
        query_key_channels: int,
        norm: str,
        dropout: float,
        padding_type: str,
        attention: CrossAttention,
        *,
        scales: tuple[ScaleSpec, ...],
        fusion: str = "softmax",
        enhanced_kinds: tuple[str, ...] = (),
        enhanced_inner_channels: int = 16,
        enhanced_heads: int = 2,
    ) -> None:
        super().__init__(shape_in_channels, channels, query_key_channels, norm, dropout, padding_type, attention)
        if not scales:
            raise ConfigError(
                "Config field 'multi_scale': no attention branch is enabled; enable 'full' or give "
                "'pool_factors' or 'window_sizes'."
            )
        if fusion not in FUSIONS:
            raise ConfigError(f"Config field 'multi_scale.fusion' is '{fusion}'; expected one of {list(FUSIONS)}.")
        self.scales = nn.ModuleList(
            AttentionScale(
                spec,
                EnhancedAttention(query_key_channels, enhanced_inner_channels, enhanced_heads)
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

    def cross_attention(
        self, inputs: AttentionInputs, height: int, width: int, extra: ExtraKeys | None = None
    ) -> Tensor:
        """Stacked SA / AS tokens -> residual + gamma * fused multi-scale attention (2B, N, C); ``extra``
        keys / values join the key set of every branch."""
        attended = [
            scale(inputs.query, inputs.key, inputs.value, height, width, self.attention, extra) for scale in self.scales
        ]
        if self.fusion_mode == "softmax":
            weights = torch.softmax(self.scale_logits, 0).to(attended[0].dtype)
            fused = sum(weight * branch for weight, branch in zip(weights, attended, strict=True))
        else:
            fused = F.linear(torch.cat(attended, -1), self.scale_mixing.to(attended[0].dtype))
        return inputs.residual + self.gamma[0] * fused
