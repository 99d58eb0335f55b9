"""A subject's photos for personalisation: every ordered pair among them, with a person mask per target.

Layout of a subject directory::

    subject_dir/<photo>              the photos, all of one size (e.g. anna_01.png ...)
    subject_dir/annotations.csv      their keypoints in the PATN annotation format (name: [y...]: [x...])

Pairs follow the PATN rule (emca.data.pairs.build_pairs with every photo as one person): all ordered pairs
of photos that show both hips and both shoulders. Each item is a PoseTransferDataset item plus
``target_mask`` (1, H, W) float, the person mask of the target keypoints (emca.data.skeleton.person_mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader

from emca.data.annotations import read_annotations
from emca.data.batch import collate_pairs
from emca.data.datamodule import MAX_IMAGE_SIDE
from emca.data.dataset import PoseTransferDataset, check_images, load_image
from emca.data.pairs import build_pairs
from emca.data.skeleton import person_mask
from emca.errors import DataError
from emca.options import bounded

SUBJECT = "subject"
# person_mask's defaults are the Market-1501 protocol's values at 128 px image height
MASK_RADIUS_PER_HEIGHT = 4.0 / 128
DEFAULT_SIGMA = 6.0  # the pose-map width of checkpoints that do not record theirs


def photo_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(f"Cannot read the subject photo '{path}': {err}.") from err
    return height, width


class SubjectPairs(PoseTransferDataset):
    """All usable ordered pairs of one subject's photos (see the module docstring).

    The pair list comes from the annotation file instead of a pairs CSV, so PoseTransferDataset's file
    reading is replaced; item loading is PoseTransferDataset's, plus the target's person mask.
    """

    def __init__(
        self,
        root: str | Path,
        annotation_file: str = "annotations.csv",
        height: int | None = None,
        width: int | None = None,
        sigma: float | None = None,
        mask_radius: float | None = None,
    ) -> None:
        self.image_dir = Path(root)
        annotation_path = self.image_dir / annotation_file
        self.annotations = read_annotations(annotation_path)
        if not self.annotations:
            raise DataError(f"{annotation_path} lists no photos; a subject needs at least two annotated photos.")
        self.photo_names = sorted(self.annotations)
        if height is None or width is None:
            height, width = photo_size(self.image_dir / self.photo_names[0])
        check_images(self.image_dir, self.photo_names, height, width, annotation_path, progress=False)
        self.pairs = build_pairs(self.annotations, lambda name: SUBJECT)
        if not self.pairs:
            raise DataError(
                f"{annotation_path}: fewer than two photos show both hips and both shoulders, so no "
                "(source, target) pair can be made; add photos where the whole torso is visible."
            )
        assert sigma is None or sigma > 0, sigma
        self.height, self.width = height, width
        self.sigma = sigma  # None until the base model's is known (SubjectDataModule.match_base)
        self.flip_probability = 0.0
        self.mask_radius = mask_radius if mask_radius is not None else MASK_RADIUS_PER_HEIGHT * height
        self._cache = self._new_cache()

    def subject_mask(self, keypoints: np.ndarray) -> Tensor:
        """(1, H, W) float person mask of keypoints (18, 2)."""
        mask = person_mask(keypoints, self.height, self.width, point_radius=self.mask_radius)
        return torch.from_numpy(mask).float()[None]

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        if self.sigma is None:
            raise RuntimeError("SubjectPairs needs its pose sigma: call SubjectDataModule.match_base first")
        item = super().__getitem__(index)
        item["target_mask"] = self.subject_mask(self.annotations[item["target_name"]])
        return item

    def reference_images(self) -> Tensor:
        """Every annotated photo, (P, 3, H, W) in [-1, 1], in name order."""
        return torch.stack([load_image(self.image_dir / name, self.height, self.width) for name in self.photo_names])


@dataclass(frozen=True)
class SubjectDataOptions:
    """``data`` of experiment=personalize (conf/data/subject.yaml): the schema of :class:`SubjectDataModule`'s
    arguments. None in ``height`` / ``width`` means the photos' size, in ``sigma`` the base model's."""

    root: str = ""
    annotation_file: str = "annotations.csv"
    height: int | None = bounded(None, kind=int, minimum=1, maximum=MAX_IMAGE_SIDE)
    width: int | None = bounded(None, kind=int, minimum=1, maximum=MAX_IMAGE_SIDE)
    sigma: float | None = bounded(None, kind=float, exclusive_minimum=0)
    mask_radius: float | None = bounded(None, kind=float, exclusive_minimum=0)
    batch_size: int = bounded(8, minimum=1)
    num_workers: int = bounded(0, minimum=0)
    val_pairs: int = bounded(16, minimum=1)


class SubjectDataModule(pl.LightningDataModule):
    """Training batches over all pairs of a subject's photos; validation over ``val_pairs`` evenly spaced ones."""

    def __init__(
        self,
        root: str,
        annotation_file: str = "annotations.csv",
        height: int | None = None,
        width: int | None = None,
        sigma: float | None = None,
        mask_radius: float | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        val_pairs: int = 16,
    ) -> None:
        super().__init__()
        if not Path(root).is_dir():
            raise DataError(
                f"Subject directory '{root}' does not exist (set data.root=...); it must hold the "
                f"photos and {annotation_file}."
            )
        assert batch_size >= 1 and val_pairs >= 1, (batch_size, val_pairs)
        self.pairs = SubjectPairs(root, annotation_file, height, width, sigma, mask_radius)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_pairs = val_pairs

    @property
    def height(self) -> int:
        return self.pairs.height

    @property
    def width(self) -> int:
        return self.pairs.width

    def reference_images(self) -> Tensor:
        return self.pairs.reference_images()

    def match_base(self, base_data: dict[str, Any]) -> None:
        """Take the base model's pose sigma (``emca train`` has checked, where it started, that the photos
        and a sigma set by the user fit the base model: emca.train.check_subject)."""
        base_sigma = base_data.get("sigma", DEFAULT_SIGMA)
        assert self.pairs.sigma in (None, base_sigma), (self.pairs.sigma, base_sigma)
        self.pairs.sigma = base_sigma

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.pairs,
            batch_size=self.batch_size,
            shuffle=True,
            collate_fn=collate_pairs,
            num_workers=self.num_workers,
            drop_last=len(self.pairs) > self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        count = min(self.val_pairs, len(self.pairs))
        indices = np.linspace(0, len(self.pairs), count, endpoint=False).astype(int).tolist()
        return DataLoader(
            torch.utils.data.Subset(self.pairs, indices),
            batch_size=self.batch_size,
            collate_fn=collate_pairs,
            num_workers=self.num_workers,
        )
