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
from emca.data.deepfashion_frame import joint_beyond_crop
from emca.data.deepfashion_highres import SPLITS, HighresSplit, image_tree, images_of, release_lacks, tree_files
from emca.errors import DataError

NAME = "the DPTN / CFLD release"
FILES = ("fashion-resize-annotation-{split}.csv", "fashion-resize-pairs-{split}.csv", "{split}.lst")


def missing_files(raw_root: Path) -> list[str]:
    """What this release needs and ``raw_root`` lacks (empty: it is this release)."""
    return release_lacks(raw_root, FILES)


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
        beyond = joint_beyond_crop(annotations)
        if beyond is not None:
            raise DataError(
                f"'{annotation_path}': '{beyond[0]}' has a joint beyond x = 175, so these keypoints are not in the "
                "256x176 frame this release's CSVs use; is the file from another release?"
            )
        splits[split] = HighresSplit(images, annotations, read_pairs(raw_root / f"fashion-resize-pairs-{split}.csv"))
    return splits
