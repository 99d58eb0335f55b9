"""Crop geometry and the rejection rules: the crop window around a box, cutting and resizing it, the pose's
upscaling, the pose difference of two crops, :func:`off_centre`, and :data:`CAUSES` (every rejection cause, in the
order the checks apply).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from emca.data.keypoints import visible
from emca.data.video.options import import_cv2

# the pose is found on the crop upscaled by a whole factor to at least this many rows (MediaPipe's pose model
# looks at a 256x256 region of interest)
POSE_MIN_HEIGHT = 256


# rejection causes: key in report.json -> what it means (report.md), in the order they are checked
CAUSES: dict[str, str] = {
    "edge": "cut off by the frame edge (the box, widened by `margin` box heights and `edge_tolerance` px, leaves it)",
    "overlap": "overlaps another person (box IoU above `max_overlap`, or a third of their box inside this crop)",
    "too_small": "too small for the preset (the crop would be upscaled more than `max_upscale` times)",
    "untracked": "not (yet) followed by the tracker (ByteTrack confirms a track after a few frames, drops some boxes)",
    "min_gap": "fewer than `min_gap` frames after the identity's previous kept crop",
    "no_pose": "MediaPipe found no person in the crop",
    "several_people": "MediaPipe found more than one face in the crop",
    "low_confidence": "low keypoint confidence (mean over the 12 limb joints below `min_keypoint_confidence`)",
    "missing_hip_or_shoulder": "a hip or a shoulder is missing (the PATN pairs rule)",
    "off_centre": "the pose spans under half the crop's height or its hips are off the middle half of its width",
    "colour_outlier": "its clothing colours differ from its identity's (two such crops in a row start a new identity)",
    "single_crop": "its identity has only one crop left (a pair needs two)",
    "no_pose_pair": "no other crop of its identity (in its split) differs in pose by more than `min_pose_difference`",
}


def crop_window(
    box: Sequence[float], height: int, width: int, margin: float, frame_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(top, left, rows, cols) of the ``height``:``width`` window around ``box`` with ``margin`` on each side.

    Centred on the box; moved inside the frame where the frame is large enough (the box stays inside it).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    rows = max((y1 - y0) * (1 + 2 * margin), (x1 - x0) * (1 + 2 * margin) * height / width, 1.0)
    rows_int = int(math.ceil(rows))
    cols_int = max(1, int(round(rows_int * width / height)))
    top = int(round((y0 + y1) / 2 - rows_int / 2))
    left = int(round((x0 + x1) / 2 - cols_int / 2))
    frame_rows, frame_cols = frame_size
    if rows_int <= frame_rows:
        top = min(max(top, 0), frame_rows - rows_int)
    if cols_int <= frame_cols:
        left = min(max(left, 0), frame_cols - cols_int)
    return top, left, rows_int, cols_int


def cut_window(frame: np.ndarray, window: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """The ``window`` of ``frame`` resized to ``height`` x ``width`` (parts beyond the frame repeat its edge)."""
    cv2 = import_cv2()
    top, left, rows, cols = window
    frame_rows, frame_cols = frame.shape[:2]
    inside = frame[max(top, 0) : min(top + rows, frame_rows), max(left, 0) : min(left + cols, frame_cols)]
    pads = ((max(-top, 0), max(top + rows - frame_rows, 0)), (max(-left, 0), max(left + cols - frame_cols, 0)), (0, 0))
    if any(before or after for before, after in pads):
        inside = np.pad(inside, pads, mode="edge")
    interpolation = cv2.INTER_AREA if rows > height else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(np.ascontiguousarray(inside), (width, height), interpolation=interpolation))


def pose_scale(height: int) -> int:
    """The whole factor by which a crop ``height`` rows tall is enlarged for MediaPipe (to >= POSE_MIN_HEIGHT rows)."""
    return max(1, math.ceil(POSE_MIN_HEIGHT / height))


def pose_difference(first: np.ndarray, second: np.ndarray, height: int) -> float:
    """Mean distance of the joints present in both keypoint sets, in units of the crop ``height`` (inf if none)."""
    both = visible(first) & visible(second)
    if not both.any():
        return math.inf
    distances = np.hypot(*(first[both] - second[both]).astype(np.float64).T)
    return float(distances.mean() / height)


def off_centre(keypoints: np.ndarray, height: int, width: int) -> bool:
    """Whether the pose misses the crop's middle: its joints span under half the height, or its hips' midpoint
    lies outside the middle half of the width (the box was on a group, a part of someone, or a stray object)."""
    present = keypoints[visible(keypoints)]
    if len(present) == 0:
        return True
    hips = keypoints[[8, 11]]
    hip_col = (hips[:, 1].mean() + 0.5) if visible(hips).all() else width / 2
    return bool(present[:, 0].max() - present[:, 0].min() < height / 2 or abs(hip_col - width / 2) > width / 4)
