"""The training order: a random permutation per epoch that a run resumed mid-epoch can replay."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableRandomSampler(Sampler[int]):
    """Shuffles ``length`` items, like torch's RandomSampler, with a replayable order.

    Each pass draws a permutation seed from the global RNG (as RandomSampler does, so seeding the global RNG
    fixes the order) and keeps it in :attr:`permutation_seed`. After :meth:`resume` the next pass replays
    that permutation from position ``skip`` instead: a run restarted from a mid-epoch checkpoint sees the
    rest of the interrupted epoch, not its beginning again. The length stays the whole epoch's, because
    Lightning's restored progress counters already count the batches trained before the interruption.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self.permutation_seed: int | None = None
        self._resume: tuple[int, int] | None = None

    def resume(self, permutation_seed: int, skip: int) -> None:
        self._resume = (permutation_seed, skip)

    def __iter__(self) -> Iterator[int]:
        # a generator: the seed is drawn at the first item, as RandomSampler does, not when the iterator is
        # made (Lightning makes it before the epoch's hooks have seeded the RNG)
        if self._resume is not None:
            seed, skip = self._resume
            self._resume = None
        else:
            seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        self.permutation_seed = seed
        yield from torch.randperm(self.length, generator=torch.Generator().manual_seed(seed)).tolist()[skip:]

    def __len__(self) -> int:
        return self.length
