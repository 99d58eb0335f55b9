"""The DeepFashion release that DPTN, CFLD, PCDMs and MCLD use, read and checked for
:func:`emca.data.deepfashion_highres.write_highres`.

What the release folder holds besides the ``img_highres`` trees::

    RAW/train.lst  RAW/test.lst                     each split's images, by their flattened names
    RAW/fashion-resize-annotation-{train,test}.csv  keypoints in the 256x176 frame (spelled "fashion")
    RAW/fashion-resize-pairs-{train,test}.csv
"""

from __future__ import annotations

from pathlib import Path

from emca.data.annotations import read_annotations, read_pairs
from emca.data.deepfashion_frame import CROPPED_WIDTH
from emca.data.deepfashion_highres import SPLITS, TREES, HighresSplit, image_tree, images_of, tree_files
from emca.data.keypoints import visible
from emca.errors import DataError

NAME = "the DPTN / CFLD release"
FILES = ("fashion-resize-annotation-{split}.csv", "fashion-resize-pairs-{split}.csv", "{split}.lst")


def missing_files(raw_root: Path) -> list[str]:
    """What this release needs and ``raw_root`` lacks (empty: it is this release)."""
    missing = [name.format(split=split) for split in SPLITS for name in FILES
               if not (raw_root / name.format(split=split)).is_file()]  # fmt: skip
    return missing + ([TREES] if image_tree(raw_root) is None else [])


def read_dptn(raw_root: Path) -> dict[str, HighresSplit]:
    """Every split of the release in ``raw_root`` (:func:`missing_files` was empty), checked."""
    tree = image_tree(raw_root)
    assert tree is not None, "missing_files was checked"
    index = tree_files(tree)
    splits = {}
    for split in SPLITS:
        images = images_of(raw_root / f"{split}.lst", tree, index)
        annotation_path = raw_root / f"fashion-resize-annotation-{split}.csv"
        annotations = read_annotations(annotation_path)
        beyond = [name for name, points in annotations.items()
                  if (visible(points) & (points[:, 1] >= CROPPED_WIDTH)).any()]  # fmt: skip
        if beyond:
            raise DataError(
                f"'{annotation_path}': '{beyond[0]}' has a joint beyond x = 175, so these keypoints are not in the "
                "256x176 frame this release's CSVs use; is the file from another release?"
            )
        splits[split] = HighresSplit(images, annotations, read_pairs(raw_root / f"fashion-resize-pairs-{split}.csv"))
    return splits
