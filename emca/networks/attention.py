"""Cross-attention backends behind one interface.

Every Xing block computes, for both directions at once (stacked along the batch axis),

    output = residual + gamma * softmax(query @ key^T) @ value        (scale 1, softmax over keys)

with tokens laid out channels-last:

    query    (B, N, Dk)   e.g. Dk = 32
    key      (B, M, Dk)   M = N for full attention, fewer for pooled key/value sets
    value    (B, M, Dv)   e.g. Dv = 256
    residual (B, N, Dv)
    gamma    ()           learned scalar gate, initialised to 0 in the blocks
    output   (B, N, Dv)

Backends are stateless modules picked by config (``model/attention=reference|sdpa|fused``) and shared
by all blocks of a generator. ``reference`` materialises the (B, N, M) correlation matrix exactly as
the official XingGAN code (bmm + softmax); ``sdpa`` uses torch's scaled_dot_product_attention; the
fused Triton kernel (``ext/emca_fused``) never stores the N x M matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CrossAttention(nn.Module):
    """Base class: ``forward`` is the gated residual; subclasses implement ``attend``."""

    def attend(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """softmax(query @ key^T) @ value: (B, N, Dk), (B, M, Dk), (B, M, Dv) -> (B, N, Dv)."""
        raise NotImplementedError

    def forward(self, query: Tensor, key: Tensor, value: Tensor, residual: Tensor, gamma: Tensor) -> Tensor:
        return residual + gamma * self.attend(query, key, value)


def correlation_softmax(query: Tensor, key: Tensor) -> Tensor:
    """The attention matrix softmax(query @ key^T) over keys: (B, N, Dk), (B, M, Dk) -> (B, N, M)."""
    return torch.softmax(torch.bmm(query, key.transpose(1, 2)), dim=-1)


class ReferenceAttention(CrossAttention):
    """Materialises the N x M attention matrix, as the official code does (memory O(B N M))."""

    def attend(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        return torch.bmm(correlation_softmax(query, key), value)


class SDPAttention(CrossAttention):
    """torch.nn.functional.scaled_dot_product_attention with scale 1. Its fused (flash / memory-efficient)
    kernels only take 4-D (batch, heads, tokens, width) inputs, so the tokens get a singleton head axis;
    torch picks the kernel the device, dtype and widths allow."""

    def attend(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        heads = (query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1))
        return F.scaled_dot_product_attention(*heads, scale=1.0).squeeze(1)
