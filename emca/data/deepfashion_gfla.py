"""The DeepFashion release that GFLA, NTED and PIDM use, read and checked for
:func:`emca.data.deepfashion_highres.write_highres`.

What the release folder holds besides the ``img_highres`` trees (usually under ``RAW/img/``)::

    RAW/train.lst  RAW/test.lst              each split's images (flattened names or tree paths)
    RAW/train_pairs.txt  RAW/test_pairs.txt  no header; a line is ``target,source[,source ...]`` of tree paths
                                             such as img/MEN/Denim/id_00000080/01_1_front.jpg
    RAW/pose/MEN/.../01_1_front.txt          per image, 18 lines ``x y`` (OpenPose's COCO-18 order, -1 missing)

A pairs line is read as NTED's and PIDM's loaders read it: the first image is the target, each other one a
source, so it gives one (source, target) pair per source. The ``pose/`` files are in the 256x256 frame in the
release (NTED and PIDM shift x by -40); the frame is read from the files or stated with ``--keypoints-frame``
(:mod:`emca.data.deepfashion_frame`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emca.data.deepfashion_frame import into_crop_frame
from emca.data.deepfashion_highres import (
    SPLITS,
    HighresSplit,
    as_flattened,
    image_tree,
    images_of,
    release_lacks,
    tree_files,
)
from emca.data.keypoints import MISSING, NUM_JOINTS
from emca.errors import DataError

NAME = "the GFLA / NTED / PIDM release"
FILES = ("{split}_pairs.txt", "{split}.lst")
POSE_FOLDER = "pose"


def missing_files(raw_root: Path) -> list[str]:
    """What this release needs and ``raw_root`` lacks (empty: it is this release)."""
    return release_lacks(raw_root, FILES, ((POSE_FOLDER, "one keypoint file per image"),))


def read_pairs_txt(path: Path) -> list[tuple[str, str]]:
    """``target,source[,source ...]`` lines -> (source, target) pairs of flattened names."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entries = [entry.strip() for entry in line.split(",") if entry.strip()]
        if not entries:
            continue
        if len(entries) < 2 or any(entry.count("/") not in (0, 3, 4) for entry in entries):
            raise DataError(
                f"{path}, line {number}: expected 'target,source[,source ...]' of image paths such as "
                f"img/MEN/Denim/id_00000080/01_1_front.jpg, found {line.strip()!r}."
            )
        target = as_flattened(entries[0])
        pairs += [(as_flattened(source), target) for source in entries[1:]]
    return pairs


def read_pose_file(path: Path) -> np.ndarray:
    """A ``pose/*.txt`` file (18 lines ``x y``) -> keypoints (18, 2) int64 (row, col), -1 where missing."""
    try:
        values = np.loadtxt(path, ndmin=2)
    except ValueError as err:
        raise DataError(f"Keypoint file '{path}': {err}; expected {NUM_JOINTS} lines of 'x y'.") from err
    if values.shape != (NUM_JOINTS, 2):
        raise DataError(
            f"Keypoint file '{path}' holds {values.shape[0]} line(s) of {values.shape[1]} value(s); expected "
            f"{NUM_JOINTS} lines of 'x y' (OpenPose's COCO-18 joints, -1 -1 where missing)."
        )
    missing = (values < 0).any(axis=1)
    keypoints = np.rint(values[:, ::-1]).astype(np.int64)
    keypoints[missing] = MISSING
    return keypoints


def read_gfla(raw_root: Path, keypoints_frame: str) -> dict[str, HighresSplit]:
    """Every split of the release in ``raw_root`` (:func:`missing_files` was empty), checked, its keypoints in
    the 256x176 frame (``keypoints_frame``: "auto", "256x256" or "256x176")."""
    tree = image_tree(raw_root)
    assert tree is not None, "missing_files was checked"
    index = tree_files(tree)
    poses = tree_files(raw_root / POSE_FOLDER, suffix=".txt")
    read = {}
    for split in SPLITS:
        images = images_of(raw_root / f"{split}.lst", tree, index)
        pairs_path = raw_root / f"{split}_pairs.txt"
        pairs = read_pairs_txt(pairs_path)
        used = sorted({name for pair in pairs for name in pair})
        unlisted = [name for name in used if name not in images]
        if unlisted:
            raise DataError(
                f"'{pairs_path}' names {len(unlisted):,} image(s) that '{split}.lst' does not list, e.g. "
                f"{', '.join(unlisted[:3])}."
            )
        without = [name for name in used if name not in poses]
        if without:
            raise DataError(
                f"'{raw_root / POSE_FOLDER}' has no keypoint file for {len(without):,} image(s) of '{pairs_path}', "
                f"e.g. {', '.join(without[:3])} (expected pose/<MEN or WOMEN>/.../<image>.txt)."
            )
        read[split] = (images, {name: read_pose_file(poses[name]) for name in images if name in poses}, pairs)
    cropped = into_crop_frame({split: annotations for split, (_, annotations, _) in read.items()}, keypoints_frame,
                              "deepfashion")  # fmt: skip
    return {split: HighresSplit(images, cropped[split], pairs) for split, (images, _, pairs) in read.items()}
