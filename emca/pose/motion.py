"""Motion from a driving video made fit for a source photo: missing frames held, joints smoothed, and the pose
normalised to the source's body.

A motion is a float array (T, 18, 2) of (row, col) pixel positions with NaN for a missing joint (the integer
keypoints of emca use -1; :func:`to_keypoints` and :func:`from_keypoints` convert).

- :func:`hold_missing_frames`: a frame where no person was found repeats the last pose found (the first found pose
  stands in for the frames before it).
- :class:`OneEuroFilter` (Casiez, Roussel and Vogel, CHI 2012): a low-pass filter whose cutoff rises with speed,
  so a still joint stops jittering and a fast one does not lag. ``min_cutoff`` (Hz) sets the smoothing at rest,
  ``beta`` how fast the cutoff rises with speed.
- :func:`normalise_motion` ("Everybody Dance Now", Chan et al. 2019): each frame is scaled by the ratio of the
  source's body height to the driving person's, and moved so that its feet stand on the source's ground line
  and its hips above the source's. The driving person's height is fitted as a linear function of where their
  feet are in the frame (a camera's perspective makes a walker taller as they come closer), so a tall walker
  does not stretch a short person's photo and walking towards the camera does not grow them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emca.data.keypoints import JOINT_NAMES, MISSING, NUM_JOINTS

HEAD = tuple(JOINT_NAMES.index(name) for name in ("nose", "right_eye", "left_eye", "right_ear", "left_ear"))
ANKLES = (JOINT_NAMES.index("right_ankle"), JOINT_NAMES.index("left_ankle"))
HIPS = (JOINT_NAMES.index("right_hip"), JOINT_NAMES.index("left_hip"))


def from_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """Integer keypoints (..., 18, 2) with -1 for missing -> float positions with NaN for missing."""
    positions = np.asarray(keypoints, dtype=np.float64).copy()
    positions[(positions == MISSING).any(-1)] = np.nan
    return positions


def to_keypoints(positions: np.ndarray, height: int, width: int) -> np.ndarray:
    """Float positions (..., 18, 2) -> integer keypoints, -1 where a joint is missing or outside the frame."""
    keypoints = np.full(positions.shape, MISSING, dtype=np.int64)
    rounded = np.round(np.nan_to_num(positions, nan=-1.0))
    inside = ~np.isnan(positions).any(-1) & (rounded[..., 0] >= 0) & (rounded[..., 0] < height)
    inside &= (rounded[..., 1] >= 0) & (rounded[..., 1] < width)
    keypoints[inside] = rounded[inside].astype(np.int64)
    return keypoints


def hold_missing_frames(motion: np.ndarray, found: np.ndarray) -> np.ndarray:
    """``motion`` (T, 18, 2) with every frame where ``found`` (T,) is False replaced by the last found frame."""
    assert motion.shape[1:] == (NUM_JOINTS, 2) and found.shape == motion.shape[:1]
    if not found.any():
        raise ValueError("no frame has a person to follow")
    held = motion.copy()
    last = int(np.argmax(found))  # frames before the first found one take it
    for frame in range(len(held)):
        if found[frame]:
            last = frame
        else:
            held[frame] = motion[last]
    return held


def _smoothing_factor(cutoff: np.ndarray | float, period: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / period)


@dataclass
class OneEuroFilter:
    """One Euro filter over every coordinate of a motion, frame by frame at ``fps`` frames a second.

    A joint that goes missing restarts its filter when it comes back (no smoothing across the gap).
    """

    fps: float
    min_cutoff: float = 1.0  # Hz: the cutoff of a still joint (lower: smoother)
    beta: float = 0.05  # how much the cutoff rises per pixel a second of speed (higher: less lag)
    derivative_cutoff: float = 1.0  # Hz: smoothing of the speed estimate

    def __post_init__(self) -> None:
        assert self.fps > 0 and self.min_cutoff > 0 and self.beta >= 0 and self.derivative_cutoff > 0

    def __call__(self, motion: np.ndarray) -> np.ndarray:
        period = 1.0 / self.fps
        smoothed = np.full_like(motion, np.nan)
        previous = np.full(motion.shape[1:], np.nan)
        speed = np.zeros(motion.shape[1:])
        for frame, positions in enumerate(motion):
            restart = np.isnan(previous)
            raw_speed = np.where(restart, 0.0, (positions - previous) / period)
            speed = np.where(
                restart, 0.0, speed + _smoothing_factor(self.derivative_cutoff, period) * (raw_speed - speed)
            )
            cutoff = self.min_cutoff + self.beta * np.abs(speed)
            estimate = np.where(
                restart, positions, previous + _smoothing_factor(cutoff, period) * (positions - previous)
            )
            smoothed[frame] = estimate
            previous = estimate  # NaN where the joint is missing: it restarts when it is back
        return smoothed


def body_height(positions: np.ndarray) -> float:
    """Top of the head (its highest joint) to the lower ankle, in pixels; NaN without a head joint or an ankle."""
    head, ankles = positions[list(HEAD), 0], positions[list(ANKLES), 0]
    if np.isnan(head).all() or np.isnan(ankles).all():
        return math.nan
    return float(np.nanmax(ankles) - np.nanmin(head))


def ground_row(positions: np.ndarray) -> float:
    """The row the feet stand on: the lower ankle (the lowest joint when both ankles are missing)."""
    ankles = positions[list(ANKLES), 0]
    return float(np.nanmax(ankles) if not np.isnan(ankles).all() else np.nanmax(positions[:, 0]))


def hip_column(positions: np.ndarray) -> float:
    """The column between the hips (of the joints' columns when both hips are missing)."""
    hips = positions[list(HIPS), 1]
    return float(np.nanmean(hips) if not np.isnan(hips).all() else np.nanmean(positions[:, 1]))


def height_model(motion: np.ndarray, tolerance: float = 0.35) -> tuple[float, float]:
    """(slope, intercept) of the driving person's body height as a linear function of their ground row, fitted
    over the frames where both are known; a constant (slope 0) when the feet never move up or down.

    A pose detector's mistakes (a crouch read as a giant) would pull a least-squares line through them, so the
    fit is repeated without the frames more than ``tolerance`` of the fitted height off it, until none is."""
    heights = np.array([body_height(frame) for frame in motion])
    grounds = np.array([ground_row(frame) for frame in motion])
    used = ~np.isnan(heights)
    if not used.any():
        raise ValueError("the driving person's head and ankles are never both visible, so their height is unknown")
    while True:
        if np.ptp(grounds[used]) < 1.0 or used.sum() < 3:
            slope, intercept = 0.0, float(np.median(heights[used]))
        else:
            slope, intercept = (float(v) for v in np.polyfit(grounds[used], heights[used], 1))
        expected = np.maximum(slope * grounds + intercept, 1.0)
        inliers = used & (np.abs(heights - expected) <= tolerance * expected)
        if inliers.sum() == used.sum() or not inliers.any():
            return slope, intercept
        used = inliers


def implausible_frames(motion: np.ndarray, found: np.ndarray, tolerance: float = 0.35, window: int = 9) -> np.ndarray:
    """Frames (T,) whose body height is off the median height of the ``window`` found frames around them by more
    than ``tolerance`` of it: a pose detector's mistake (a limb taken for another person's, a crouch read as a
    giant), since a body does not change size from one moment to the next. Such a frame then holds the last good
    pose, as a frame without the person does."""
    assert found.any() and tolerance > 0 and window >= 1
    heights = np.array([body_height(frame) for frame in motion])
    measured = np.flatnonzero(found & ~np.isnan(heights))
    wrong = np.zeros(len(motion), dtype=bool)
    for position, frame in enumerate(measured):
        around = measured[max(0, position - window // 2) : position + window // 2 + 1]
        reference = float(np.median(heights[around]))
        wrong[frame] = abs(heights[frame] - reference) > tolerance * max(reference, 1.0)
    return wrong


def normalise_motion(motion: np.ndarray, source: np.ndarray) -> np.ndarray:
    """The driving ``motion`` (T, 18, 2) moved onto the body of the ``source`` pose (18, 2).

    Frame t is scaled about its ground point by ``source height / driving height at its ground row`` and moved so
    that its ground row becomes the source's and the column between its hips the source's.
    """
    source_height = body_height(source)
    if math.isnan(source_height):
        raise ValueError("the source photo shows no head joint or no ankle, so its body height is unknown")
    slope, intercept = height_model(motion)
    source_ground = np.array([ground_row(source), hip_column(source)])
    normalised = np.empty_like(motion)
    for frame, positions in enumerate(motion):
        ground = np.array([ground_row(positions), hip_column(positions)])
        scale = source_height / max(slope * ground[0] + intercept, 1.0)
        normalised[frame] = (positions - ground) * scale + source_ground
    return normalised


def jitter(motion: np.ndarray) -> float:
    """Mean distance a joint moves from one frame to the next, in pixels (over joints present in both)."""
    steps = np.linalg.norm(np.diff(motion, axis=0), axis=-1)
    return float(np.nanmean(steps)) if not np.isnan(steps).all() else 0.0
