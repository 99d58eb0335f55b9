"""The batch every consumer of pose-transfer pairs reads: training, validation, evaluation, personalisation.

A dataset item (emca.data.dataset.PoseTransferDataset) is a dict of one pair; the data loaders collate
items into a :class:`PoseTransferBatch` with :func:`collate_pairs`, so the modules downstream read typed
fields, not string keys. Lightning moves a dataclass batch to the device field by field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate

IMAGE_CHANNELS = 3  # RGB


@dataclass
class PoseTransferBatch:
    """B (source, target) pairs of one person; images in [-1, 1], poses as 18 Gaussian heatmaps.

    source_image, target_image        (B, 3, H, W)
    source_pose, target_pose          (B, 18, H, W)
    source_keypoints, target_keypoints (B, 18, 2) int64 (row, col), -1 where a joint is missing
    source_name, target_name          B image file names
    target_mask                       (B, 1, H, W) the target's person mask (subject data only), else None
    """

    source_image: Tensor
    source_pose: Tensor
    target_image: Tensor
    target_pose: Tensor
    source_keypoints: Tensor
    target_keypoints: Tensor
    source_name: list[str]
    target_name: list[str]
    target_mask: Tensor | None = None

    def __len__(self) -> int:
        return self.source_image.shape[0]

    def head(self, count: int) -> PoseTransferBatch:
        """The first ``count`` pairs."""
        return PoseTransferBatch(
            **{field.name: _first(getattr(self, field.name), count) for field in dataclasses.fields(self)}
        )

    def contiguous(self, memory_format: torch.memory_format) -> PoseTransferBatch:
        """The same pairs with the images, pose maps and mask laid out in ``memory_format`` (channels_last
        lets oneDNN / cuDNN convolutions skip a layout conversion on every layer)."""
        maps = ("source_image", "source_pose", "target_image", "target_pose", "target_mask")
        return dataclasses.replace(
            self,
            **{
                name: getattr(self, name).contiguous(memory_format=memory_format)
                for name in maps
                if getattr(self, name) is not None
            },
        )


def _first(value: Any, count: int) -> Any:
    return None if value is None else value[:count]


def collate_pairs(items: Sequence[dict[str, Any]]) -> PoseTransferBatch:
    """Dataset items (dicts with the fields of :class:`PoseTransferBatch`) -> one batch."""
    return PoseTransferBatch(**default_collate(list(items)))
