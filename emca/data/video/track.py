"""Identities: ByteTrack (supervision) following boxes across frames, and :class:`IdentitySplitter` cutting a
track into a new identity where its position or size jumps; the clothing colours (:func:`body_colours`,
:func:`colour_distance`) by which the builder splits an identity whose appearance changes.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np

from emca.data.keypoints import visible
from emca.data.video.detect import People
from emca.data.video.options import FromVideoOptions, import_cv2, import_supervision

# why an identity was started other than by a new track (counted in the report)
SPLIT_REASONS = ("position", "size", "appearance")


# the body parts whose colours identify a person: the torso (shoulders and hips, shrunk about its centre) and
# the thighs (hip to knee, their middle 60 %)
BODY_PARTS = ("torso", "thighs")
_TORSO = (2, 5, 11, 8)  # right shoulder, left shoulder, left hip, right hip: a quadrilateral
_THIGHS = ((8, 9), (11, 12))


def body_colours(crop: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Mean CIE Lab colour (L 0-100) of the torso and of the thighs in an RGB crop, (2, 3); NaN for a part not seen.

    The regions follow the pose, so the background barely enters them (unlike a box's middle, whose colours
    change with what the person walks past).
    """
    cv2 = import_cv2()
    lab = cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    present = visible(keypoints)
    colours = np.full((len(BODY_PARTS), 3), np.nan)
    masks = [np.zeros(crop.shape[:2], np.uint8) for _ in BODY_PARTS]
    if present[list(_TORSO)].all():
        corners = keypoints[list(_TORSO)][:, ::-1].astype(np.float64) + 0.5  # (x, y)
        centre = corners.mean(axis=0)
        cv2.fillPoly(masks[0], [np.round(centre + 0.6 * (corners - centre)).astype(np.int32)], 1)
    thickness = max(1, round(crop.shape[0] / 40))
    for hip, knee in _THIGHS:
        if present[hip] and present[knee]:
            start, end = keypoints[hip][::-1].astype(np.float64), keypoints[knee][::-1].astype(np.float64)
            first = tuple(int(v) for v in np.round(start + 0.2 * (end - start)))
            last = tuple(int(v) for v in np.round(start + 0.8 * (end - start)))
            cv2.line(masks[1], first, last, 1, thickness)
    for part, mask in enumerate(masks):
        if mask.any():
            colours[part] = lab[mask > 0].mean(axis=0)
    return colours


def colour_distance(first: np.ndarray, second: np.ndarray) -> float:
    """The largest CIE76 colour difference (delta E) between the body parts seen in both; 0 if none is."""
    both = ~(np.isnan(first).any(axis=1) | np.isnan(second).any(axis=1))
    if not both.any():
        return 0.0
    return float(np.linalg.norm(first[both] - second[both], axis=1).max())


@dataclass
class _TrackState:
    identity: int
    box: np.ndarray
    frame: int


class IdentitySplitter:
    """Tracker ids -> identities: a track starts a new identity wherever it jumps (see the package docstring).

    ``observe`` is called once per tracked detection, in frame order, and checks its position and size against
    the track's previous detection; ``split`` starts a new identity for a track from outside (the builder does
    when a crop's colours differ from its identity's).
    """

    def __init__(self, options: FromVideoOptions, fps: float, first_identity: int = 1) -> None:
        self.options = options
        self.fps = fps
        self.next_identity = first_identity
        self.tracks: dict[int, _TrackState] = {}
        self.splits: Counter[str] = Counter()
        self.started: dict[int, str] = {}  # identity -> "track" or the reason of the jump that started it
        self.track_of: dict[int, int] = {}  # identity -> its track

    def _new_identity(self, reason: str, track_id: int) -> int:
        identity = self.next_identity
        self.next_identity += 1
        self.started[identity] = reason
        self.track_of[identity] = track_id
        return identity

    def jump(self, state: _TrackState, frame: int, box: np.ndarray) -> str | None:
        """Why the track's detection ``box`` at ``frame`` is someone else ("position", "size"), or None."""
        options = self.options
        height, previous_height = float(box[3] - box[1]), float(state.box[3] - state.box[1])
        seconds = max(frame - state.frame, 1) / self.fps
        shift = float(np.hypot(*((box[:2] + box[2:]) / 2 - (state.box[:2] + state.box[2:]) / 2)))
        if shift > max(height, previous_height) * (options.max_jump + options.max_speed * seconds):
            return "position"
        if max(height, previous_height) > options.max_size_change * max(min(height, previous_height), 1e-6):
            return "size"
        return None

    def observe(self, track_id: int, frame: int, box: np.ndarray) -> int:
        """The identity of track ``track_id``'s detection ``box`` at ``frame``."""
        box = np.asarray(box, dtype=np.float64)
        state = self.tracks.get(track_id)
        if state is None:
            state = _TrackState(self._new_identity("track", track_id), box, frame)
            self.tracks[track_id] = state
            return state.identity
        reason = self.jump(state, frame, box)
        if reason is not None:
            self.splits[reason] += 1
            state.identity = self._new_identity(reason, track_id)
        state.box, state.frame = box, frame
        return state.identity

    def split(self, identity: int, reason: str) -> int:
        """Start a new identity for the track now showing ``identity``; returns the new one."""
        self.splits[reason] += 1
        state = self.tracks[self.track_of[identity]]
        state.identity = self._new_identity(reason, self.track_of[identity])
        return state.identity


class _Tracker:
    """supervision's ByteTrack on :class:`People`: the track id of every box, -1 where it follows none."""

    def __init__(self, frame_rate: float) -> None:
        self._sv = import_supervision()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ByteTrack is deprecated in supervision >= 0.28 (still shipped < 0.31)
            # minimum_consecutive_frames=2: a box becomes a track once it is seen twice, so lone false
            # detections make no identity; lost_track_buffer is in frames at 30 fps: one second
            self._tracker = self._sv.ByteTrack(
                frame_rate=frame_rate, lost_track_buffer=30, minimum_consecutive_frames=2
            )

    def update(self, people: People) -> np.ndarray:
        count = len(people.boxes)
        detections = self._sv.Detections(
            xyxy=np.asarray(people.boxes, dtype=np.float32).reshape(-1, 4),
            confidence=np.asarray(people.scores, dtype=np.float32).reshape(-1),
            data={"index": np.arange(count)},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracked = self._tracker.update_with_detections(detections)
        ids = np.full(count, -1, dtype=np.int64)
        if len(tracked) > 0:
            ids[np.asarray(tracked.data["index"], dtype=np.int64)] = np.asarray(tracked.tracker_id, dtype=np.int64)
        return ids
