"""Recording the multi-scale attention of chosen query points, for figures.

    with record_attention(generator, query_tokens=[40, 95], sample=0) as recorder:
        generator(source_image, source_pose, target_pose)
    for record in recorder.records: ...   # one ScaleRecord per block and scale

Outside the context nothing is recorded and the normal path pays one ``is None`` test per branch.
While recording, branches without enhanced attention also compute their correlation matrix
explicitly (the backend does not return it), so recording is for single batches, not training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from emca.errors import ConfigError
from emca.networks.multiscale import AttentionScale

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
            raise ConfigError("record_attention needs at least one query token to record.")
        self.query_tokens = torch.as_tensor(list(query_tokens), dtype=torch.int64)
        self.sample = sample
        self.records: list[ScaleRecord] = []

    def for_block(self, block: int) -> _BlockRecorder:
        return _BlockRecorder(self, block)

    def add(self, block: int, scale: str, attention: Tensor, raw: Tensor, refined: Tensor | None) -> None:
        """Keep SA and AS rows of the recorded sample from (2B, Q, hk, wk) maps."""
        batch = attention.shape[0] // 2
        if not 0 <= self.sample < batch:
            raise ConfigError(f"record_attention: sample {self.sample} is outside the batch of {batch}.")
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


class _BlockRecorder:
    """The :class:`~emca.networks.multiscale.ScaleRecorder` a branch of block ``block`` calls."""

    def __init__(self, recorder: AttentionRecorder, block: int) -> None:
        self.recorder = recorder
        self.block = block
        self.query_tokens = recorder.query_tokens

    def __call__(self, scale: str, attention: Tensor, raw: Tensor, refined: Tensor | None) -> None:
        self.recorder.add(self.block, scale, attention, raw, refined)


def attention_scales(generator: nn.Module) -> list[tuple[int, AttentionScale]]:
    """(block index, branch) of every multi-scale attention branch of a generator."""
    return [
        (index, scale)
        for index, block in enumerate(getattr(generator, "blocks", ()))
        for scale in getattr(block, "scales", ())
    ]


@contextlib.contextmanager
def record_attention(generator: nn.Module, query_tokens: Sequence[int], sample: int = 0) -> Iterator[AttentionRecorder]:
    """Record every multi-scale branch's attention for ``query_tokens`` during the forward passes run
    inside the context; raises ConfigError for a generator without multi-scale attention blocks."""
    scales = attention_scales(generator)
    if not scales:
        raise ConfigError(
            "This generator has no multi-scale attention blocks to record (XingGAN, or XingGAN++ "
            "with multi_scale and enhanced_attention disabled)."
        )
    recorder = AttentionRecorder(query_tokens, sample)
    try:
        for block, scale in scales:
            scale.recorder = recorder.for_block(block)
        yield recorder
    finally:
        for _, scale in scales:
            scale.recorder = None
