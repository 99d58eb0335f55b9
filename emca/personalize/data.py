"""A subject's photos for personalisation: every ordered pair among them, with a person mask per target.

Layout of a subject directory::

    subject_dir/<photo>              the photos, all of one size (e.g. anna_01.png ...)
    subject_dir/annotations.csv      their keypoints in the PATN annotation format (name: [y...]: [x...])

Pairs follow the PATN rule (emca.data.pairs.build_pairs with every photo as one person): all ordered pairs
of photos that show both hips and both shoulders. Each item is a PoseTransferDataset item plus
``target_mask`` (1, H, W) float, the person mask of the target keypoints (emca.data.skeleton.person_mask).
"""

from __future__ import annotations

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
from emca.data.dataset import PoseTransferDataset, check_images, load_image
from emca.data.pairs import build_pairs
from emca.data.skeleton import person_mask
from emca.errors import ConfigError, DataError

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
        if sigma is not None and not sigma > 0:
            raise ConfigError(f"data.sigma: the pose-map Gaussian width must be positive, got {sigma}.")
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
        for name, value in (("batch_size", batch_size), ("val_pairs", val_pairs)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"data.{name}: expected a positive integer, got {value!r}.")
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
        """Check the photos against the base model's data config (its frame) and take its pose sigma unless
        one is set; a photo size or sigma the base was not trained with is a ConfigError."""
        expected = (base_data.get("height"), base_data.get("width"))
        if None not in expected and expected != (self.height, self.width):
            raise ConfigError(
                f"The subject photos in '{self.pairs.image_dir}' are {self.height}x{self.width} (HxW) but the base "
                f"model was trained at {expected[0]}x{expected[1]}; resize or crop the photos (and their keypoints) "
                "to the model's frame, e.g. with emca.pose.framing.fit_to_model."
            )
        base_sigma = base_data.get("sigma", DEFAULT_SIGMA)
        if self.pairs.sigma is None:
            self.pairs.sigma = base_sigma
        elif self.pairs.sigma != base_sigma:
            raise ConfigError(
                f"data.sigma is {self.pairs.sigma} but the base model's pose maps used sigma "
                f"{base_sigma}; leave data.sigma=null to use the base model's."
            )

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
