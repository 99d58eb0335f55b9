"""Stick-figure drawing and the Market-style person mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.draw import disk, polygon
from skimage.morphology import dilation, erosion

from emca.data.keypoints import LIMBS
from emca.data.skeleton import (
    JOINT_COLOURS,
    LIMB_COLOURS,
    MASK_LIMBS,
    draw_skeleton,
    person_mask,
    skeleton_images,
)
from emca.errors import DataError


def _keypoints(joints: dict[int, tuple[int, int]]) -> np.ndarray:
    keypoints = np.full((18, 2), -1, dtype=np.int64)
    for joint, position in joints.items():
        keypoints[joint] = position
    return keypoints


def _distance_to_segment(height: int, width: int, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    points = np.stack([rows, cols], -1).astype(float)
    axis = (end - start).astype(float)
    t = np.clip(((points - start) @ axis) / (axis @ axis), 0, 1)
    return np.linalg.norm(points - (start + t[..., None] * axis), axis=-1)


def test_limb_colour_between_joints_and_background_elsewhere() -> None:
    neck, shoulder = np.array([10, 8]), np.array([40, 30])
    image = draw_skeleton(_keypoints({1: tuple(neck), 2: tuple(shoulder)}), 64, 48, thickness=3)
    assert image.shape == (64, 48, 3) and image.dtype == np.uint8
    limb = LIMBS.index((1, 2))
    np.testing.assert_array_equal(image[25, 19], LIMB_COLOURS[limb])  # the midpoint
    np.testing.assert_array_equal(image[10, 8], JOINT_COLOURS[1])
    np.testing.assert_array_equal(image[40, 30], JOINT_COLOURS[2])
    drawn = image.any(axis=-1)
    near = _distance_to_segment(64, 48, neck, shoulder) <= 3.5
    assert drawn[near].mean() > 0.5 and not drawn[~near].any()
    # OpenPose's palette: hues in steps of 20 degrees starting from red
    np.testing.assert_array_equal(LIMB_COLOURS[:4], [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0]])


def test_missing_joints_are_skipped() -> None:
    # the neck (1) and right elbow (3) are missing: every limb between these joints vanishes, three dots stay
    joints = {2: (10, 10), 4: (50, 40), 5: (10, 40)}
    image = draw_skeleton(_keypoints(joints), 64, 48, thickness=2)
    rows, cols = np.mgrid[0:64, 0:48]
    near_joint = np.zeros((64, 48), dtype=bool)
    for row, col in joints.values():
        near_joint |= np.hypot(rows - row, cols - col) <= 2.5
    drawn = image.any(axis=-1)
    assert drawn[near_joint].mean() > 0.5 and not drawn[~near_joint].any()
    np.testing.assert_array_equal(image[50, 40], JOINT_COLOURS[4])
    assert not draw_skeleton(_keypoints({}), 64, 48).any()


def test_skeleton_images_match_the_drawings() -> None:
    poses = np.stack([_keypoints({1: (5, 5), 2: (30, 20)}), _keypoints({8: (40, 10), 9: (60, 12)})])
    batch = skeleton_images(torch.from_numpy(poses), 64, 48)
    assert batch.shape == (2, 3, 64, 48) and batch.dtype == torch.float32
    for pose, drawn in zip(poses, batch, strict=True):
        expected = torch.from_numpy(draw_skeleton(pose, 64, 48)).permute(2, 0, 1).float() / 127.5 - 1
        torch.testing.assert_close(drawn, expected)
    assert batch.min() == -1 and batch.max() == 1


def test_bad_keypoint_shape_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"shape \(18, 2\).*\(17, 2\)"):
        draw_skeleton(np.zeros((17, 2)), 64, 48)
    with pytest.raises(DataError, match="shape"):
        person_mask(np.zeros((18, 3)), 64, 48)


def _reference_mask(keypoints: np.ndarray, shape: tuple[int, int], radius: float = 4) -> np.ndarray:
    """The pose-gan Market mask built with scikit-image primitives, for comparison."""
    mask = np.zeros(shape, dtype=bool)
    keypoints = keypoints.astype(float)
    for start, end in MASK_LIMBS:
        if (keypoints[[start, end]] == -1).any():
            continue
        direction = keypoints[start] - keypoints[end]
        normal = radius * np.array([-direction[1], direction[0]]) / np.linalg.norm(direction)
        corners = np.array(
            [
                keypoints[start] + normal,
                keypoints[start] - normal,
                keypoints[end] - normal,
                keypoints[end] + normal,
            ]
        )
        mask[polygon(corners[:, 0], corners[:, 1], shape=shape)] = True
    for joint in keypoints:
        if (joint != -1).all():
            mask[disk(tuple(joint), radius, shape=shape)] = True
    square = np.ones((5, 5), dtype=bool)
    return erosion(dilation(mask, square), square)


@pytest.mark.parametrize("seed", range(6))
def test_person_mask_equals_the_scikit_image_construction(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = (128, 64) if seed % 2 else (64, 48)
    # distinct joints on a coarse lattice, so limbs are never zero-length; some off-image, some missing
    cells = rng.choice((height // 4 + 2) * (width // 4 + 2), size=18, replace=False)
    keypoints = np.stack([cells // (width // 4 + 2) * 4 - 4, cells % (width // 4 + 2) * 4 - 4], axis=1)
    keypoints[rng.random(18) < 0.2] = -1
    np.testing.assert_array_equal(person_mask(keypoints, height, width), _reference_mask(keypoints, (height, width)))


def test_person_mask_covers_the_joints_and_excludes_far_background() -> None:
    joints = {
        0: (12, 24),
        1: (22, 24),
        2: (22, 16),
        5: (22, 32),
        8: (60, 19),
        11: (60, 29),
        9: (90, 19),
        12: (90, 29),
        10: (118, 19),
        13: (118, 29),
        3: (40, 14),
        6: (40, 34),
    }
    keypoints = _keypoints(joints)
    mask = person_mask(keypoints, 128, 64)
    assert mask.dtype == bool and mask.shape == (128, 64)
    assert all(mask[row, col] for row, col in joints.values())
    assert mask[40, 24]  # the torso between the hip-shoulder edges is closed up
    assert not mask[:, :8].any() and not mask[:, 45:].any() and not mask[:4].any()
    assert not person_mask(_keypoints({}), 128, 64).any()
