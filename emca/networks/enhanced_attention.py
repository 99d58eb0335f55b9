"""Enhanced attention (EA) of XingGAN++: refining a correlation matrix before its softmax.

This project's reading of the 2025 paper (its body is not available; docs/xingganpp.md): each
query's correlations with the keys are computed independently and are noisy, so EA lets the queries
agree on them first, as the attention-in-attention module of AiATrack does. For a correlation matrix
E = query @ key^T (B, N, M):

1. each query's correlation row E[n] is one token. Its embedding must not depend on the number of keys
   M (the same weights serve every resolution, pyramid level and window), so a row is described by
   where it looks: ``row_token[n] = softmax(E[n]) @ key`` (B, N, Dk), a point in key-feature space;
2. an inner multi-head attention among the row tokens (``heads`` heads of ``inner_channels`` with
   scale 1/sqrt(inner_channels)) finds, for every row, the rows that look at similar places. Its keys
   and values are the rows of a *context*: all N rows inside a window, or the rows of the queries
   average-pooled by the pyramid factor for a pooled key set (so the inner matrix is N x N / f^2, not
   N x N); the values are those context rows themselves, so nothing is tied to M;
3. the heads' consensus rows are mixed by a learned weight per head into a residual correction:
   ``E' = E + sum_h weight[h] * consensus_h``. The weights start at zero, so an untrained EA leaves
   the attention exactly unchanged and training decides how much consensus to add.

``over: columns`` is the other reading, closer to AiATrack's own: the tokens are the keys' correlation
columns E[:, m] (each described by ``softmax(E[:, m]) @ query``, where in query space the key is looked
at from), the keys agree among themselves (an M x M inner matrix; no pooled context), and the
consensus columns are added to E the same way.

EA needs E explicitly, so a branch with EA computes softmax(E') @ value with explicit matrices (bmm)
instead of calling the attention backend; the fused backend cannot serve it. Its cost is the
(B, N, M) matrix plus the heads' (B, heads, N, M) consensus; that is why XingGAN++ applies it to the
coarse scales (pooled key sets, windows) at DeepFashion size and not to the full N x N branch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONSENSUS_AXES = ("rows", "columns")


def correlation(query: Tensor, key: Tensor) -> Tensor:
    """E = query @ key^T (scale 1, as XingGAN): (B, N, Dk), (B, M, Dk) -> (B, N, M)."""
    return torch.bmm(query, key.transpose(1, 2))


class RefinedAttention(NamedTuple):
    """What an attention branch computed explicitly: ``raw`` E and ``refined`` E' (B, N, M; the same
    tensor without EA) and ``output`` softmax(E') @ value (B, N, Dv). The figures read E and E'."""

    raw: Tensor
    refined: Tensor
    output: Tensor


class EnhancedAttention(nn.Module):
    """EA for one attention branch; see the module docstring.

    Args:
        key_channels: Dk, the width of queries and keys.
        inner_channels: width of each inner-attention head.
        heads: number of inner-attention heads.
        over: ``rows`` (the queries agree on their correlation rows) or ``columns`` (the keys agree on
            their correlation columns).
    """

    def __init__(self, key_channels: int, inner_channels: int = 16, heads: int = 2, over: str = "rows") -> None:
        super().__init__()
        assert inner_channels >= 1 and heads >= 1 and over in CONSENSUS_AXES, (inner_channels, heads, over)
        self.over = over
        self.heads = heads
        self.inner_channels = inner_channels
        self.row_query = nn.Linear(key_channels, heads * inner_channels, bias=False)
        self.row_key = nn.Linear(key_channels, heads * inner_channels, bias=False)
        # zero: a fresh EA adds nothing to E (a plain Parameter, so the generator's N(0, 0.02) init skips it)
        self.consensus_weight = nn.Parameter(torch.zeros(heads))

    def _split_heads(self, tokens: Tensor) -> Tensor:
        """(B, L, heads * inner) -> (B, heads, L, inner)."""
        return tokens.unflatten(-1, (self.heads, self.inner_channels)).transpose(1, 2)

    def refine(self, raw: Tensor, context: Tensor, key: Tensor) -> Tensor:
        """raw E (B, N, M), context rows (B, L, M), key (B, M, Dk) -> E' (B, N, M). With ``over: columns`` it
        is called on E^T, with the queries in the role of the keys."""
        row_tokens = torch.bmm(torch.softmax(raw, -1), key)  # (B, N, Dk): where each query looks
        context_tokens = row_tokens if context is raw else torch.bmm(torch.softmax(context, -1), key)
        consensus = F.scaled_dot_product_attention(  # (B, heads, N, M); values are the context rows
            self._split_heads(self.row_query(row_tokens)),
            self._split_heads(self.row_key(context_tokens)),
            context.unsqueeze(1).expand(-1, self.heads, -1, -1),
            scale=1 / math.sqrt(self.inner_channels),
        )
        return raw + torch.einsum("h,bhnm->bnm", self.consensus_weight.to(consensus.dtype), consensus)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, context_query: Tensor | None = None
    ) -> RefinedAttention:
        """query (B, N, Dk), key (B, M, Dk), value (B, M, Dv), context_query (B, L, Dk) or None for the
        rows of ``query`` itself -> :class:`RefinedAttention` with output (B, N, Dv)."""
        raw = correlation(query, key)
        if self.over == "columns":
            columns = raw.transpose(1, 2)  # (B, M, N): every key's correlations with the queries
            refined = self.refine(columns, columns, query).transpose(1, 2)
        else:
            context = raw if context_query is None else correlation(context_query, key)
            refined = self.refine(raw, context, key)
        return RefinedAttention(raw, refined, torch.bmm(torch.softmax(refined, -1), value))
