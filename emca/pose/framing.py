"""Fitting an arbitrary photo (and its keypoints) to a model's fixed resolution, invertibly.

A model trained on DeepFashion expects 256x176 portrait frames with one full-body person in the
middle; Market-1501 models expect 128x64 pedestrian crops. Users' photos come in any size and aspect
ratio, so :func:`fit_to_model` scales the photo by one factor (no distortion: the generator never saw
stretched bodies) and places it in the model's frame with the person centred horizontally.

Choices:

* ``mode="pad"`` (default) scales the whole photo to fit inside the frame and fills the rest with
  ``fill``, white by default, because DeepFashion photos are full-body shots on a white background:
  padding keeps the whole body (nothing is cut off), and white borders look like the training data.
  The photo is centred vertically; horizontally, the bounding box of the visible keypoints is centred,
  which may push some background off one side but keeps the person whole and in the middle.
* ``mode="crop"`` scales the photo to cover the whole frame (no padding) and cuts the overflow, with
  the window centred on the keypoints' bounding box as far as the photo allows. It suits photos whose
  background matters more than borders, at the risk of cutting limbs when the photo's aspect ratio
  differs a lot from the model's.
* Horizontal centring uses the keypoints, not the image, because people are often off-centre in
  photos; vertically the keypoints' box is a poor guide in pad mode (it stops at the nose and ankles,
  not at the top of the head and the soles), so pad mode centres the photo there.
* Without any visible keypoint the photo's centre stands in for the person's.

The returned :class:`Framing` records the scale and offset, so keypoints detected or generated in the
model's frame can be mapped back to the photo with :func:`invert_keypoints`. Pixel (r, c) covers
[r, r+1) x [c, c+1), so its centre maps as (r + 0.5) * scale + offset; the resized photo's size is
rounded to whole pixels, which makes the row and column scales differ slightly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from emca.data.keypoints import MISSING, NUM_JOINTS, visible
from emca.errors import DataError
from emca.pose.extract import check_rgb_image

FitMode = Literal["pad", "crop"]
FIT_MODES: tuple[str, ...] = ("pad", "crop")


@dataclass(frozen=True)
class Framing:
    """Where a photo went in the model's frame: model pixel edge = photo pixel edge * scale + offset.

    ``scale`` and ``offset`` are (row, col); ``offset`` is the position of the resized photo's top-left
    corner in the model frame (negative when cropped). The sizes bound the valid keypoints of each frame.
    """

    scale: tuple[float, float]
    offset: tuple[int, int]
    photo_size: tuple[int, int]  # (height, width) of the original photo
    model_size: tuple[int, int]  # (height, width) of the model's frame


def _map_keypoints(
    keypoints: np.ndarray, scale: tuple[float, float], offset: tuple[float, float], bounds: tuple[int, int]
) -> np.ndarray:
    """Map visible keypoints' pixel centres by edge' = edge * scale + offset; outside ``bounds`` -> -1."""
    keypoints = np.asarray(keypoints)
    present = visible(keypoints)
    mapped = np.full((NUM_JOINTS, 2), MISSING, dtype=np.int64)
    centres = keypoints[present].astype(np.float64) + 0.5
    new = np.floor(centres * np.asarray(scale) + np.asarray(offset)).astype(np.int64)
    inside = (new >= 0).all(axis=1) & (new < np.asarray(bounds)).all(axis=1)
    mapped[np.flatnonzero(present)[inside]] = new[inside]
    return mapped


def transform_keypoints(keypoints: np.ndarray, framing: Framing) -> np.ndarray:
    """Photo keypoints (18, 2) (row, col) -> model-frame keypoints; those cut off become -1."""
    return _map_keypoints(keypoints, framing.scale, framing.offset, framing.model_size)


def invert_keypoints(keypoints: np.ndarray, framing: Framing) -> np.ndarray:
    """Model-frame keypoints (18, 2) (row, col) -> the photo's frame; those on padding become -1.

    Exact to about 0.5 / scale photo pixels (one model pixel covers 1 / scale photo pixels).
    """
    inverse_scale = (1.0 / framing.scale[0], 1.0 / framing.scale[1])
    inverse_offset = (-framing.offset[0] * inverse_scale[0], -framing.offset[1] * inverse_scale[1])
    return _map_keypoints(keypoints, inverse_scale, inverse_offset, framing.photo_size)


def _person_centre(keypoints: np.ndarray, photo_size: tuple[int, int]) -> np.ndarray:
    """(row, col) centre, in pixel-edge coordinates, of the visible keypoints' box (photo centre if none)."""
    present = visible(keypoints)
    if not present.any():
        return np.asarray(photo_size, dtype=np.float64) / 2
    points = keypoints[present].astype(np.float64)
    return (points.min(axis=0) + points.max(axis=0)) / 2 + 0.5


def _check_inputs(image: np.ndarray, keypoints: np.ndarray) -> None:
    check_rgb_image(image, "fit_to_model")
    if np.shape(keypoints) != (NUM_JOINTS, 2):
        raise DataError(
            f"fit_to_model: expected keypoints of shape ({NUM_JOINTS}, 2) (row, col), got {np.shape(keypoints)}."
        )


def plan_framing(
    photo_size: tuple[int, int], keypoints: np.ndarray, height: int, width: int, mode: FitMode = "pad"
) -> Framing:
    """Where a photo of ``photo_size`` (H, W) goes in a ``height`` x ``width`` frame, person centred.

    Also used on its own for a target pose given in some photo's frame (no pixels needed).
    """
    if mode not in FIT_MODES:
        raise ValueError(f"fit_to_model: mode must be one of {', '.join(FIT_MODES)}, got {mode!r}.")
    assert height > 0 and width > 0, (height, width)
    # a zero side would make the scale infinite and every keypoint fall outside the frame
    if min(photo_size) <= 0:
        raise DataError(f"plan_framing: the photo's size must be positive, got {photo_size[0]}x{photo_size[1]} (HxW).")
    keypoints = np.asarray(keypoints)
    model_size = np.asarray((height, width))
    ratios = model_size / np.asarray(photo_size)
    factor = ratios.min() if mode == "pad" else ratios.max()
    resized_size = np.maximum(1, np.round(np.asarray(photo_size) * factor)).astype(np.int64)
    scale = resized_size / np.asarray(photo_size)

    # offsets that put the person's centre in the frame's centre
    offset = np.round(model_size / 2 - _person_centre(keypoints, photo_size) * scale).astype(np.int64)
    if mode == "pad":
        offset[0] = (height - resized_size[0]) // 2
    else:  # keep the frame covered: the offset lies in [frame - resized, 0]
        offset = np.clip(offset, model_size - resized_size, 0)
    return Framing(
        scale=(float(scale[0]), float(scale[1])),
        offset=(int(offset[0]), int(offset[1])),
        photo_size=(int(photo_size[0]), int(photo_size[1])),
        model_size=(height, width),
    )


def fit_to_model(
    image: np.ndarray,
    keypoints: np.ndarray,
    height: int,
    width: int,
    mode: FitMode = "pad",
    fill: tuple[int, int, int] = (255, 255, 255),
) -> tuple[np.ndarray, np.ndarray, Framing]:
    """Scale and pad (or crop) ``image`` (H, W, 3) RGB uint8 to ``height`` x ``width``, person centred.

    Returns the framed image (height, width, 3) uint8, the keypoints (18, 2) in its frame (cut-off
    joints -1) and the :class:`Framing` that :func:`invert_keypoints` undoes. See the module docstring.
    """
    _check_inputs(image, keypoints)
    framing = plan_framing((image.shape[0], image.shape[1]), keypoints, height, width, mode)
    resized_size = np.round(np.asarray(framing.photo_size) * np.asarray(framing.scale)).astype(np.int64)
    resized = Image.fromarray(image).resize((int(resized_size[1]), int(resized_size[0])), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height), tuple(int(v) for v in fill))
    canvas.paste(resized, (int(framing.offset[1]), int(framing.offset[0])))  # PIL clips the overflow
    return np.asarray(canvas), transform_keypoints(keypoints, framing), framing
