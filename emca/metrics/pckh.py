"""PCKh: the fraction of joints that a pose detector finds in a generated image within ``alpha`` head sizes of
where they should be.

The head size of a reference pose is the largest distance between two of its head joints (nose, eyes, ears),
the "head size from the head keypoints" of the PATN / XingGAN protocol; a pose with fewer than two head joints
has none and is not scored. A joint counts when it is present in the reference; a joint the detector missed
counts as wrong.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from emca.data.keypoints import NUM_JOINTS
from emca.errors import EmcaError
from emca.pose.motion import HEAD, from_keypoints

ALPHA = 0.5


def detect_joints(extractor: Callable[[np.ndarray], np.ndarray], image: np.ndarray, min_height: int) -> np.ndarray:
    """The joints a pose ``extractor`` (uint8 (H, W, 3) -> keypoints (18, 2) (row, col)) finds in ``image``,
    enlarged (nearest) to at least ``min_height`` px first, as (18, 2) float in ``image``'s pixels (NaN: missing;
    all NaN when the extractor finds nobody). Small images are enlarged because detectors miss small people."""
    factor = max(1, -(-min_height // image.shape[0]))
    try:
        keypoints = extractor(image.repeat(factor, axis=0).repeat(factor, axis=1))
    except EmcaError:  # nobody, or several people
        return np.full((NUM_JOINTS, 2), np.nan)
    return (from_keypoints(keypoints) + 0.5) / factor - 0.5  # pixel centres, enlarged -> image


def head_size(reference: np.ndarray) -> float:
    """The largest distance between two present head joints of ``reference`` (18, 2) float (NaN: missing)."""
    head = [point for point in reference[list(HEAD)] if not np.isnan(point).any()]
    if len(head) < 2:
        return float("nan")
    return float(max(np.linalg.norm(a - b) for a, b in itertools.combinations(head, 2)))


@dataclass(frozen=True)
class PCKh:
    score: float  # correct joints / joints scored (NaN when none was scored)
    correct: int
    joints: int
    poses: int  # reference poses with a head size


def pckh(detected: np.ndarray, reference: np.ndarray, alpha: float = ALPHA) -> PCKh:
    """PCKh of ``detected`` poses (N, 18, 2) against ``reference`` poses (N, 18, 2), float with NaN for missing
    joints (a pose the detector did not find at all is all NaN)."""
    assert detected.shape == reference.shape and detected.shape[1:] == (18, 2) and alpha > 0
    correct = joints = poses = 0
    for found, expected in zip(detected, reference, strict=True):
        size = head_size(expected)
        if np.isnan(size) or size == 0:
            continue
        poses += 1
        present = ~np.isnan(expected).any(-1)
        distance = np.linalg.norm(np.nan_to_num(found, nan=np.inf) - expected, axis=-1)
        correct += int((distance[present] <= alpha * size).sum())
        joints += int(present.sum())
    return PCKh(correct / joints if joints else float("nan"), correct, joints, poses)
