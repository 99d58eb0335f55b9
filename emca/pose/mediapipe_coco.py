"""MediaPipe's 33 pose landmarks -> the 18 COCO/OpenPose joints used everywhere in emca.

MediaPipe Pose (BlazePose) reports 33 landmarks, each (x, y, z, visibility) with x and y normalised by
the image width and height. Its "left" and "right" are the person's own, as in OpenPose: on a person
facing the camera, ``left_shoulder`` lies on the image's right-hand side. Every COCO-18 joint except
the neck has a MediaPipe landmark of the same name; the neck is the midpoint of the shoulders, as in
OpenPose's COCO model.

This module is pure numpy, so it works (and is tested) without MediaPipe installed.
"""

from __future__ import annotations

import numpy as np

from emca.data.keypoints import JOINT_NAMES, MISSING, NUM_JOINTS
from emca.errors import DataError

# MediaPipe's PoseLandmark enum, in its index order (lower-cased names)
MEDIAPIPE_LANDMARKS: tuple[str, ...] = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)
NUM_LANDMARKS = len(MEDIAPIPE_LANDMARKS)

_NECK = JOINT_NAMES.index("neck")
_SHOULDERS = (MEDIAPIPE_LANDMARKS.index("left_shoulder"), MEDIAPIPE_LANDMARKS.index("right_shoulder"))
# COCO joint i is MediaPipe landmark _SOURCE[i]; the neck (computed) gets a placeholder
_SOURCE: tuple[int, ...] = tuple(0 if name == "neck" else MEDIAPIPE_LANDMARKS.index(name) for name in JOINT_NAMES)


def landmarks_to_coco(landmarks: np.ndarray, height: int, width: int, min_visibility: float = 0.5) -> np.ndarray:
    """COCO-18 keypoints (18, 2) int64 (row, col) from MediaPipe landmarks (33, 4) of an H x W image.

    ``landmarks`` rows are (x_norm, y_norm, z, visibility). A landmark becomes -1 when its visibility is
    below ``min_visibility`` or it lies outside the image; the neck is missing unless both shoulders are
    present. Pixel (r, c) covers [r, r+1) x [c, c+1) in normalised * size coordinates, so the pixel
    index is the floor (as MediaPipe's own drawing utilities do).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (NUM_LANDMARKS, 4):
        raise DataError(
            f"MediaPipe landmarks: expected an array of shape ({NUM_LANDMARKS}, 4) holding (x, y, z, visibility) "
            f"per landmark, got shape {landmarks.shape}."
        )
    if height <= 0 or width <= 0:
        raise DataError(f"MediaPipe landmarks: the image size must be positive, got {height}x{width} (HxW).")
    rows = landmarks[:, 1] * height
    cols = landmarks[:, 0] * width
    with np.errstate(invalid="ignore"):  # NaN coordinates simply count as outside the image
        usable = (landmarks[:, 3] >= min_visibility) & (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)

    source = list(_SOURCE)
    coco_rows, coco_cols, coco_usable = rows[source], cols[source], usable[source]
    left, right = _SHOULDERS
    coco_rows[_NECK] = (rows[left] + rows[right]) / 2
    coco_cols[_NECK] = (cols[left] + cols[right]) / 2
    coco_usable[_NECK] = usable[left] and usable[right]

    keypoints = np.full((NUM_JOINTS, 2), MISSING, dtype=np.int64)
    keypoints[coco_usable, 0] = np.floor(coco_rows[coco_usable]).astype(np.int64)
    keypoints[coco_usable, 1] = np.floor(coco_cols[coco_usable]).astype(np.int64)
    return keypoints
