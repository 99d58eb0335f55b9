"""The two frames DeepFashion keypoints come in, and how to tell them apart.

The In-shop images of the low-resolution release are 256x256 with white margins; the field trains on the
central 256x176 crop (40 px cut from each side). Keypoint files circulate in both frames: the
``fasion-resize-annotation`` / ``fashion-resize-annotation`` CSVs of PATN and DPTN are in the 256x176 one, the
per-image ``pose/*.txt`` files of GFLA / NTED / PIDM in the 256x256 one. The frame is read from the files: a
visible joint beyond x = 175, the crop's last column, can only be in the 256x256 frame. A user may state it
instead. It is never assumed.
"""

from __future__ import annotations

import numpy as np

from emca.data.keypoints import MISSING, visible

RAW_SIZE = (256, 256)  # (H, W) of the low-resolution images
CROP = 40  # px cut from the left and from the right
CROPPED_WIDTH = RAW_SIZE[1] - 2 * CROP  # 176
KEYPOINT_FRAMES = ("auto", "256x256", "256x176")


def crop_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """Keypoints (18, 2) (row, col) in the 256x256 frame -> the 256x176 crop; joints cut off become -1."""
    shifted = keypoints.copy()
    present = visible(keypoints)
    shifted[present, 1] -= CROP
    outside = present & ((shifted[:, 1] < 0) | (shifted[:, 1] >= CROPPED_WIDTH))
    shifted[outside] = MISSING
    return shifted


def joint_beyond_crop(annotations: dict[str, np.ndarray]) -> tuple[str, int] | None:
    """The first image of ``{name: keypoints (18, 2) (row, col)}`` with a visible joint beyond the 256x176 crop's
    last column, and that joint's x; None when there is none."""
    for name, keypoints in annotations.items():
        beyond = visible(keypoints) & (keypoints[:, 1] >= CROPPED_WIDTH)
        if beyond.any():
            return name, int(keypoints[beyond][0, 1])
    return None


def read_frame(annotations: dict[str, np.ndarray]) -> tuple[str, str]:
    """The frame of ``{name: keypoints (18, 2) (row, col)}`` read from them, and why: ("256x256" | "256x176",
    reason)."""
    beyond = joint_beyond_crop(annotations)
    if beyond is not None:
        name, column = beyond
        return "256x256", f"'{name}' has a joint at x = {column}, beyond the 256x176 crop's last column (175)"
    return "256x176", f"no joint of the {len(annotations):,} annotated images lies beyond x = 175"


def into_crop_frame(
    annotations: dict[str, dict[str, np.ndarray]], given: str, label: str
) -> dict[str, dict[str, np.ndarray]]:
    """Each split's ``{name: keypoints}`` of ``annotations`` (split -> annotations) in the 256x176 frame: the frame
    ``given`` ("auto" reads it from all splits together), printed with the reason and, after a crop, the joints
    that fell outside it. ``label`` names the data in what is printed."""
    assert given in KEYPOINT_FRAMES, given
    every = {name: points for split in annotations.values() for name, points in split.items()}
    frame, reason = (given, "as stated with --keypoints-frame") if given != "auto" else read_frame(every)
    if frame == "256x176":
        print(f"{label} keypoints: the 256x176 frame ({reason}); kept as they are.")
        return annotations
    cropped = {name: crop_keypoints(points) for name, points in every.items()}
    lost = sum(int(visible(points).sum() - visible(cropped[name]).sum()) for name, points in every.items())
    total = sum(int(visible(points).sum()) for points in every.values())
    print(
        f"{label} keypoints: the 256x256 frame ({reason}); x shifted by -{CROP} into the crop; {lost:,} of "
        f"{total:,} joints fell outside the crop and are now missing."
    )
    return {split: {name: cropped[name] for name in named} for split, named in annotations.items()}
