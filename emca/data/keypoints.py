"""The 18-joint COCO/OpenPose skeleton: names, flip permutation, limbs and Gaussian pose maps.

Keypoints are arrays of shape (18, 2) holding (row, col) = (y, x) integer pixel coordinates in the
stored image's frame, with -1 in both entries for a missing joint (the PATN files store y first).
"""

from __future__ import annotations

import numpy as np
import torch

# OpenPose's COCO-18 order, which produced the PATN annotations. (PATN's pose_utils labels 14-17 as
# Leye, Reye, Lear, Rear; the estimator's output is REye, LEye, REar, LEar. Flipping is unaffected.)
JOINT_NAMES: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
NUM_JOINTS = len(JOINT_NAMES)
MISSING = -1

_LEFT_RIGHT_PAIRS = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))


def _flip_permutation() -> tuple[int, ...]:
    perm = list(range(NUM_JOINTS))
    for left, right in _LEFT_RIGHT_PAIRS:
        perm[left], perm[right] = right, left
    return tuple(perm)


# joint i of a mirrored image is joint FLIP_PERMUTATION[i] of the original
FLIP_PERMUTATION: tuple[int, ...] = _flip_permutation()

# OpenPose COCO-18 limbs (joint index pairs), used for skeleton drawing and person masks
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 15), (15, 17), (0, 14), (14, 16),
)  # fmt: skip

# the PATN pairs rule drops images missing either hip or either shoulder
REQUIRED_FOR_PAIRS: tuple[int, ...] = (2, 5, 8, 11)


def visible(keypoints: np.ndarray) -> np.ndarray:
    """Boolean mask (18,) of joints that are present."""
    return (keypoints[:, 0] != MISSING) & (keypoints[:, 1] != MISSING)


def flip_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
    """Mirror keypoints (18, 2) of an image ``width`` pixels wide, swapping left and right joints."""
    flipped = keypoints.copy()
    present = visible(keypoints)
    flipped[present, 1] = width - 1 - keypoints[present, 1]
    return flipped[list(FLIP_PERMUTATION)]


# the pose maps' Gaussian width in pixels (PATN's and XingGAN's); a model stores the one it was trained with
DEFAULT_SIGMA = 6.0


def pose_heatmaps(keypoints: np.ndarray, height: int, width: int, sigma: float = DEFAULT_SIGMA) -> torch.Tensor:
    """Render (18, H, W) float32 maps exp(-d^2 / (2 sigma^2)) around each joint; zero for missing ones."""
    rows = torch.arange(height, dtype=torch.float32).view(1, height, 1)
    cols = torch.arange(width, dtype=torch.float32).view(1, 1, width)
    coords = torch.as_tensor(np.asarray(keypoints), dtype=torch.float32)
    joint_rows = coords[:, 0].view(-1, 1, 1)
    joint_cols = coords[:, 1].view(-1, 1, 1)
    squared_distance = (rows - joint_rows) ** 2 + (cols - joint_cols) ** 2
    maps = torch.exp(-squared_distance / (2.0 * sigma**2))
    present = torch.as_tensor(visible(np.asarray(keypoints)))
    return maps * present.view(-1, 1, 1).to(maps.dtype)
