"""The cross-attention step of a Xing block: shape-guided appearance (SA) and appearance-guided shape (AS).

SA takes queries and values from the appearance stream and keys from the shape stream; AS the reverse.
Both share the 1x1 projections and the gate ``gamma`` (initialised to 0, so a fresh block is its conv
branches alone), and run as one backend call with the directions stacked on the batch axis: rows
[0, B) are SA, rows [B, 2B) are AS. :class:`XingAttention` is XingGAN's single-scale step;
emca.networks.multiscale.MultiScaleXingAttention (XingGAN++) overrides :meth:`XingAttention.attend`.

Optional *memory tokens* (T, C) are features that every query attends to besides the other stream's
tokens, projected by the module's own key and value convolutions (MoA personalisation passes a
subject's features; emca.personalize.moa).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


def to_tokens(features: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C), channels-last tokens in row-major pixel order."""
    return features.flatten(2).transpose(1, 2)


def from_tokens(tokens: Tensor, height: int, width: int) -> Tensor:
    """(B, H*W, C) -> (B, C, H, W); the inverse of :func:`to_tokens`."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


class MemoryKeys(NamedTuple):
    """Memory tokens projected to keys (T, Dk) and values (T, C); they join every query's key set."""

    key: Tensor
    value: Tensor

    def append_to(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """(B', M, Dk), (B', M, C) -> (B', M + T, Dk), (B', M + T, C)."""
        rows = key.shape[0]
        return (
            torch.cat((key, self.key.expand(rows, -1, -1)), 1),
            torch.cat((value, self.value.expand(rows, -1, -1)), 1),
        )


def with_memory(key: Tensor, value: Tensor, memory: MemoryKeys | None) -> tuple[Tensor, Tensor]:
    """The key set with the memory appended; unchanged without memory."""
    return (key, value) if memory is None else memory.append_to(key, value)


class XingAttention(nn.Module):
    """SA and AS cross-attention of one Xing block, through an attention backend.

    forward(appearance (B, C, h, w), shape (B, C, h, w), memory (T, C) or None)
    -> (appearance' (B, C, h, w), shape' (B, C, h, w)), each ``stream + gamma * attended``.

    Args:
        channels: C, the width of both streams (the values).
        query_key_channels: Dk of the 1x1 query / key projections (C // 8 as released).
        backend: the attention backend (emca.networks.attention), stateless and shared by all blocks.
    """

    def __init__(self, channels: int, query_key_channels: int, backend: nn.Module) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, query_key_channels, 1)
        self.key = nn.Conv2d(channels, query_key_channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))  # shape (1,) as in the official state dict
        self.backend = backend

    def attend(
        self, query: Tensor, key: Tensor, value: Tensor, height: int, width: int, memory: MemoryKeys | None
    ) -> Tensor:
        """Stacked SA / AS tokens query (2B, N, Dk), key (2B, N, Dk), value (2B, N, C) on an h x w grid
        -> attended values (2B, N, C), before the gate."""
        return self.backend(query, *with_memory(key, value, memory))

    def memory_keys(self, memory: Tensor) -> MemoryKeys:
        """Memory tokens (T, C) -> their keys (T, Dk) and values (T, C) by this module's projections."""
        column = memory.t()[None, :, :, None]  # (1, C, T, 1): a one-column feature map for the 1x1 convs
        return MemoryKeys(to_tokens(self.key(column))[0], to_tokens(self.value(column))[0])

    def forward(self, appearance: Tensor, shape: Tensor, memory: Tensor | None = None) -> tuple[Tensor, Tensor]:
        height, width = appearance.shape[-2:]
        # each stream is projected on its own and only the projections are stacked (SA rows, then AS rows):
        # stacking the C-channel streams first would keep two more copies of them for the 1x1 convs' backward
        attended = self.attend(
            to_tokens(torch.cat((self.query(appearance), self.query(shape)))),
            to_tokens(torch.cat((self.key(shape), self.key(appearance)))),  # the other stream supplies the keys
            to_tokens(torch.cat((self.value(appearance), self.value(shape)))),
            height,
            width,
            None if memory is None else self.memory_keys(memory),
        )
        appearance_update, shape_update = (self.gamma[0] * from_tokens(attended, height, width)).chunk(2, dim=0)
        return appearance + appearance_update, shape + shape_update
