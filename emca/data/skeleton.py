"""Drawing keypoints: OpenPose-style stick figures for sample grids, and person masks from keypoints.

``person_mask`` reproduces the pose mask of the Deformable-GAN / PATN Market-1501 evaluation
(``produce_ma_mask`` in ``pose_utils.py`` of AliaksandrSiarohin/pose-gan), used for mask-SSIM and as a
subject mask for personalisation. What it reproduces:

- 23 limbs: the 17 OpenPose limbs, the neck to both ears, and the torso edges right hip - left hip,
  left hip - left shoulder, right hip - right shoulder, plus left ear - right ear;
- each limb whose two joints are present is filled as the quadrilateral ``f + n, f - n, t - n, t + n``
  with ``n`` the limb's unit normal times ``point_radius`` (4 px), rasterised at pixel centres as
  ``skimage.draw.polygon`` does;
- each present joint adds a disc of the pixels strictly closer than ``point_radius``
  (``skimage.draw.disk``);
- the union is dilated, then eroded, with a ``closing_size`` x ``closing_size`` square (5 x 5),
  with mirrored borders as ``skimage.morphology.dilation`` / ``erosion`` (scipy ``mode='reflect'``).

Implemented with numpy so that training code does not need scikit-image; the tests check equality
with the scikit-image construction.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageDraw
from torch import Tensor

from emca.data.keypoints import LIMBS, NUM_JOINTS, visible
from emca.errors import DataError

# the mask adds the neck-ear links, the torso edges and the ear-ear link to the skeleton's limbs
MASK_LIMBS: tuple[tuple[int, int], ...] = (*LIMBS, (1, 16), (1, 17), (8, 11), (11, 5), (8, 2), (16, 17))


def _hue_wheel(count: int) -> np.ndarray:
    """``count`` fully saturated colours evenly spaced in hue (OpenPose uses 18 steps of 20 degrees)."""
    steps = max(count, NUM_JOINTS)
    return np.array(
        [[round(255 * channel) for channel in colorsys.hsv_to_rgb(i / steps, 1.0, 1.0)] for i in range(count)],
        dtype=np.uint8,
    )


LIMB_COLOURS: np.ndarray = _hue_wheel(len(LIMBS))
JOINT_COLOURS: np.ndarray = _hue_wheel(NUM_JOINTS)


def _check_keypoints(keypoints: np.ndarray) -> np.ndarray:
    keypoints = np.asarray(keypoints)
    if keypoints.shape != (NUM_JOINTS, 2):
        raise DataError(
            f"Keypoints must be an array of shape ({NUM_JOINTS}, 2) holding (row, col) per COCO-18 joint "
            f"with -1 for a missing joint; got shape {keypoints.shape}."
        )
    return keypoints


def default_thickness(height: int, width: int) -> int:
    """Limb width in pixels that reads well at any size: 2 px at 64x48, 6 px at 256x176."""
    return max(1, round(min(height, width) / 32))


def draw_skeleton(keypoints: np.ndarray, height: int, width: int, thickness: int | None = None) -> np.ndarray:
    """Draw keypoints (18, 2) (row, col) as a coloured stick figure on black: (H, W, 3) uint8.

    Limbs (``keypoints.LIMBS``) get one hue each and are drawn first; joints are dots of radius
    ``thickness`` on top. Limbs or joints with a missing joint are skipped.
    """
    keypoints = _check_keypoints(keypoints)
    thickness = default_thickness(height, width) if thickness is None else thickness
    canvas = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(canvas)
    present = visible(keypoints)
    for (start, end), colour in zip(LIMBS, LIMB_COLOURS, strict=True):
        if present[start] and present[end]:
            points = [(int(keypoints[j, 1]), int(keypoints[j, 0])) for j in (start, end)]
            draw.line(points, fill=tuple(int(c) for c in colour), width=thickness)
    for joint in np.flatnonzero(present):
        row, col = (int(v) for v in keypoints[joint])
        draw.ellipse(
            [col - thickness, row - thickness, col + thickness, row + thickness],
            fill=tuple(int(c) for c in JOINT_COLOURS[joint]),
        )
    return np.array(canvas)  # a writable copy (PIL arrays are read-only)


def skeleton_images(keypoints: Tensor, height: int, width: int, thickness: int | None = None) -> Tensor:
    """Stick figures for a batch of keypoints (B, 18, 2) -> (B, 3, H, W) float in [-1, 1], same device."""
    figures = [draw_skeleton(pose.detach().cpu().numpy(), height, width, thickness) for pose in keypoints]
    stacked = torch.from_numpy(np.stack(figures)).permute(0, 3, 1, 2).float()
    return (stacked / 127.5 - 1.0).to(keypoints.device)


def _fill_polygon(mask: np.ndarray, vertices: np.ndarray) -> None:
    """Set the pixels of ``mask`` whose centres lie inside or on the polygon ``vertices`` (K, 2) (row, col).

    The ray-crossing classification of current ``skimage.draw.polygon`` (O'Rourke): a centre is kept if
    it is a vertex, or if the crossings of the rays to its right or to its left are odd (inside or on an
    edge). Older scikit-image used a half-open rule that differs only on centres exactly on an edge.
    """
    rows = np.arange(mask.shape[0], dtype=np.float64)[:, None]
    cols = np.arange(mask.shape[1], dtype=np.float64)[None, :]
    on_vertex = np.zeros(mask.shape, dtype=bool)
    right_odd = np.zeros(mask.shape, dtype=bool)
    left_odd = np.zeros(mask.shape, dtype=bool)
    previous_col, previous_row = vertices[-1, 1] - cols, vertices[-1, 0] - rows
    for vertex_row, vertex_col in vertices:
        current_col, current_row = vertex_col - cols, vertex_row - rows
        on_vertex |= (np.abs(current_col) < 1e-12) & (np.abs(current_row) < 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing = (current_col * previous_row - previous_col * current_row) / (previous_row - current_row)
        right_odd ^= ((current_row > 0) != (previous_row > 0)) & (crossing > 0)
        left_odd ^= ((current_row < 0) != (previous_row < 0)) & (crossing < 0)
        previous_col, previous_row = current_col, current_row
    mask |= on_vertex | right_odd | left_odd


def _square_filter(mask: np.ndarray, size: int, reduce: np.ufunc) -> np.ndarray:
    """Max (dilation) or min (erosion) over a ``size`` x ``size`` square, borders mirrored."""
    pad = size // 2
    padded = np.pad(mask, ((pad, size - 1 - pad), (pad, size - 1 - pad)), mode="symmetric")
    windows = sliding_window_view(padded, (size, size))
    return reduce.reduce(reduce.reduce(windows, axis=-1), axis=-1)


def person_mask(
    keypoints: np.ndarray, height: int, width: int, point_radius: float = 4.0, closing_size: int = 5
) -> np.ndarray:
    """Boolean (H, W) mask of the person drawn from keypoints (18, 2) (row, col), -1 for missing.

    The Market-1501 mask-SSIM construction (see the module docstring): limb quadrilaterals of half-width
    ``point_radius`` and joint discs of radius ``point_radius``, then a closing (dilation, then erosion)
    by a ``closing_size`` square. The defaults are the protocol's values at 128x64; scale
    ``point_radius`` with the image size for other resolutions.
    """
    keypoints = _check_keypoints(keypoints).astype(np.float64)
    mask = np.zeros((height, width), dtype=bool)
    present = visible(keypoints)
    for start, end in MASK_LIMBS:
        if not (present[start] and present[end]):
            continue
        direction = keypoints[start] - keypoints[end]
        length = np.linalg.norm(direction)
        if length == 0:
            continue  # a zero-length limb is covered by its joint discs
        normal = point_radius * np.array([-direction[1], direction[0]]) / length
        corners = np.stack(
            [
                keypoints[start] + normal,
                keypoints[start] - normal,
                keypoints[end] - normal,
                keypoints[end] + normal,
            ]
        )
        _fill_polygon(mask, corners)
    rows = np.arange(height, dtype=np.float64)[:, None]
    cols = np.arange(width, dtype=np.float64)[None, :]
    for row, col in keypoints[present]:
        mask |= ((rows - row) / point_radius) ** 2 + ((cols - col) / point_radius) ** 2 < 1
    if closing_size > 1:
        mask = _square_filter(_square_filter(mask, closing_size, np.logical_or), closing_size, np.logical_and)
    return mask
