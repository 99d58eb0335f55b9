"""One person's motion through a driving video, for ``emca animate``: every person is detected and tracked
(the detectors and ByteTrack of the from-video builder), one track is chosen, and its keypoints are found in
every frame where it is seen, in the frame's pixels.

Two passes over the frames (the frames are decoded again rather than kept: a minute of video is gigabytes):
:func:`track_people` follows everyone, :func:`person_motion` finds the chosen track's joints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emca.data.keypoints import NUM_JOINTS, REQUIRED_FOR_PAIRS, visible
from emca.data.photo import ImageFailure
from emca.data.video.crops import crop_window, cut_window, pose_scale
from emca.data.video.detect import CropSource, KeypointDetector, People, PersonDetector
from emca.data.video.track import _Tracker

# the crop around a person's box that MediaPipe looks at: the box plus this many box heights on each side, at the
# shape of a standing person (2:1)
MARGIN = 0.1
CROP_HEIGHT, CROP_WIDTH = 256, 128


@dataclass(frozen=True)
class Tracks:
    """Every track of a video: ``boxes[frame]`` maps a track id to its box (x0, y0, x1, y1) in that frame."""

    boxes: list[dict[int, tuple[float, float, float, float]]]

    def ranked(self) -> list[tuple[int, int]]:
        """(track id, frames seen) from the most seen to the least (ties: the first seen first)."""
        seen = Counter(track for frame in self.boxes for track in frame)
        first = {}
        for index, frame in enumerate(self.boxes):
            for track in frame:
                first.setdefault(track, index)
        return sorted(seen.items(), key=lambda item: (-item[1], first[item[0]]))


def track_people(frames: Iterable[np.ndarray], detect: PersonDetector, fps: float) -> Tracks:
    """Detect and track the people of every frame."""
    tracker = _Tracker(frame_rate=fps)
    boxes = []
    for frame in frames:
        people = detect(frame)
        found = np.asarray(people.boxes, dtype=np.float64).reshape(-1, 4)
        valid = np.isfinite(found).all(axis=1) & (found[:, 2] > found[:, 0]) & (found[:, 3] > found[:, 1])
        found = found[valid]
        ids = tracker.update(People(found, np.asarray(people.scores, dtype=np.float64).reshape(-1)[valid]))
        boxes.append({int(track): tuple(float(v) for v in box) for track, box in zip(ids, found) if track >= 0})
    return Tracks(boxes)


@dataclass(frozen=True)
class Motion:
    """One person's joints (T, 18, 2) float (row, col) in the frame's pixels, NaN where missing, and for each frame
    whether the person was found with a pose the model can use (both shoulders and hips)."""

    positions: np.ndarray
    found: np.ndarray


def person_motion(
    frames: Iterable[np.ndarray], boxes: list[tuple[float, float, float, float] | None], detect: KeypointDetector,
    video: Path,
) -> Motion:  # fmt: skip
    """The joints of the person in ``boxes[frame]`` (None: not seen) in every frame."""
    scale = pose_scale(CROP_HEIGHT)
    positions = np.full((len(boxes), NUM_JOINTS, 2), np.nan)
    found = np.zeros(len(boxes), dtype=bool)
    for index, frame in enumerate(frames):
        if index >= len(boxes):
            break
        box = boxes[index]
        if box is None:
            continue
        window = crop_window(box, CROP_HEIGHT, CROP_WIDTH, MARGIN, frame.shape[:2])
        big = cut_window(frame, window, CROP_HEIGHT * scale, CROP_WIDTH * scale)
        try:
            pose = detect(big, CropSource(video, index, box, window))
        except ImageFailure:
            continue
        keypoints = np.asarray(pose.keypoints).reshape(NUM_JOINTS, 2)
        present = visible(keypoints)
        if not present[list(REQUIRED_FOR_PAIRS)].all():
            continue
        top, left, rows, cols = window
        # from the enlarged crop's pixel centres to the frame's
        positions[index, present, 0] = top + (keypoints[present, 0] + 0.5) * rows / big.shape[0] - 0.5
        positions[index, present, 1] = left + (keypoints[present, 1] + 0.5) * cols / big.shape[1] - 0.5
        found[index] = True
    return Motion(positions, found)
