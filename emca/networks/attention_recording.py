"""Recording the multi-scale attention of chosen query points, for figures.

    with record_attention(generator, query_tokens=[40, 95], sample=0) as recorder:
        generator(source_image, source_pose, target_pose)
    for record in recorder.records: ...   # one ScaleRecord per block and scale

The recorder is a forward hook on every multi-scale branch (emca.networks.multiscale.AttentionScale):
the networks know nothing about it. The hook recomputes the branch's matrices explicitly from the
branch's inputs (the backend never returns them), so recording is for single batches, not training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from emca.networks.enhanced_attention import correlation
from emca.networks.multiscale import AttentionScale, KeySet, WindowPartition

DIRECTIONS = ("SA", "AS")  # the stacked batch: shape-guided appearance rows first, then appearance-guided shape


@dataclass(frozen=True)
class ScaleRecord:
    """The recorded rows of one block's branch, for one sample.

    ``attention`` (2, Q, hk, wk): softmax over the branch's keys (after EA) for SA and AS, laid out on
    the key grid (h x w, or the pooled grid), 0 outside a query's window. ``raw`` the correlation E,
    ``refined`` E' (None without EA), NaN outside a window. Q follows ``query_tokens``.
    """

    block: int
    scale: str
    attention: Tensor
    raw: Tensor
    refined: Tensor | None


class AttentionRecorder:
    """Collects :class:`ScaleRecord` s for the queries ``query_tokens`` (flat indices on the block grid)
    of batch element ``sample``."""

    def __init__(self, query_tokens: Sequence[int], sample: int = 0) -> None:
        if not query_tokens:
            raise ValueError("record_attention needs at least one query token to record.")
        self.query_tokens = torch.as_tensor(list(query_tokens), dtype=torch.int64)
        self.sample = sample
        self.records: list[ScaleRecord] = []

    def add(self, block: int, scale: str, attention: Tensor, raw: Tensor, refined: Tensor | None) -> None:
        """Keep SA and AS rows of the recorded sample from (2B, Q, hk, wk) maps."""
        batch = attention.shape[0] // 2
        if not 0 <= self.sample < batch:
            raise ValueError(f"record_attention: sample {self.sample} is outside the batch of {batch}.")
        pick = [self.sample, batch + self.sample]
        self.records.append(
            ScaleRecord(
                block,
                scale,
                attention[pick].float().cpu(),
                raw[pick].float().cpu(),
                None if refined is None else refined[pick].float().cpu(),
            )
        )


def _key_maps(rows: Tensor, tokens: Tensor, keys: KeySet, height: int, width: int, fill: float) -> Tensor:
    """Rows (B', N', M) of a branch's matrix -> the rows of the query ``tokens`` (Q,) as maps on the key grid
    (B, Q, hk, wk): the grid or pooled grid, or for windows the full grid with ``fill`` outside each query's
    window; a pyramid branch's query is the pooled cell holding the grid token. Memory tokens (keys beyond the
    grid) are not on any grid and are left out."""
    if keys.query_grid is not None:  # adaptive pooling's cell of (row, col): (row * rows' // rows, col * ...)
        rows_pooled, cols_pooled = keys.query_grid
        tokens = tokens // width * rows_pooled // height * cols_pooled + tokens % width * cols_pooled // width
    if keys.partition is None:
        grid_keys = keys.key_grid[0] * keys.key_grid[1]
        return rows[:, tokens, :grid_keys].unflatten(-1, keys.key_grid)
    partition: WindowPartition = keys.partition
    window_tokens = partition.window_tokens
    per_window = rows[..., :window_tokens].reshape(-1, partition.num_windows, window_tokens, window_tokens)
    windows = partition.query_window[tokens]
    positions = partition.owner[tokens] - windows * window_tokens
    selected = per_window[:, windows, positions]  # (B, Q, T)
    maps = selected.new_full((*selected.shape[:2], height * width), fill)
    maps.scatter_(-1, partition.token_index[windows].expand_as(selected), selected)
    return maps.unflatten(-1, (height, width))


def _recording_hook(recorder: AttentionRecorder, block: int) -> Any:
    """A forward hook for the branches of block ``block``: records their rows for the recorder's queries."""

    def hook(scale: AttentionScale, args: tuple[Any, ...], output: Tensor) -> None:
        query, key, value, height, width, *memory = args
        tokens = recorder.query_tokens.to(query.device)
        if tokens.min() < 0 or tokens.max() >= height * width:
            raise ValueError(
                f"record_attention: query tokens {tokens.tolist()} must index the block grid of "
                f"{height * width} tokens (row * width + column at 1/4 resolution)."
            )
        with torch.no_grad():
            keys = scale.key_set(query, key, value, height, width, *memory)
            if scale.enhancement is not None:
                raw, refined, _ = scale.enhancement(keys.query, keys.key, keys.value, keys.context_query)
            else:
                raw = refined = correlation(keys.query, keys.key)
            recorder.add(
                block,
                scale.spec.name,
                _key_maps(torch.softmax(refined, -1), tokens, keys, height, width, 0.0),
                _key_maps(raw, tokens, keys, height, width, float("nan")),
                _key_maps(refined, tokens, keys, height, width, float("nan"))
                if scale.enhancement is not None
                else None,
            )

    return hook


def attention_scales(generator: nn.Module) -> list[tuple[int, AttentionScale]]:
    """(block index, branch) of every multi-scale attention branch of a generator."""
    return [
        (index, scale)
        for index, block in enumerate(getattr(generator, "blocks", ()))
        for scale in block.modules()
        if isinstance(scale, AttentionScale)
    ]


@contextlib.contextmanager
def record_attention(generator: nn.Module, query_tokens: Sequence[int], sample: int = 0) -> Iterator[AttentionRecorder]:
    """Record every multi-scale branch's attention for ``query_tokens`` during the forward passes run
    inside the context; raises ValueError for a generator without multi-scale attention blocks."""
    scales = attention_scales(generator)
    if not scales:
        raise ValueError(
            "This generator has no multi-scale attention blocks to record (XingGAN, or XingGAN++ "
            "with multi_scale and enhanced_attention disabled)."
        )
    recorder = AttentionRecorder(query_tokens, sample)
    handles = [scale.register_forward_hook(_recording_hook(recorder, block)) for block, scale in scales]
    try:
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
