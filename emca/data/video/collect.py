"""From videos to kept crops: :class:`_VideoReader` (OpenCV frames) and :class:`_Builder`, which detects, tracks
and splits identities in every frame read, applies the per-crop rejection rules (counting each cause), finds the
keypoints and writes each kept crop (:class:`KeptCrop`) to the staging folder.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from emca.data.keypoints import MISSING, NUM_JOINTS, REQUIRED_FOR_PAIRS, visible
from emca.data.photo import ImageFailure
from emca.data.video.crops import crop_window, cut_window, off_centre, pose_scale
from emca.data.video.detect import CropSource, KeypointDetector, People, PersonDetector, _fraction_inside, box_iou
from emca.data.video.options import FromVideoOptions, Target, import_cv2
from emca.data.video.track import SPLIT_REASONS, IdentitySplitter, _Tracker, body_colours, colour_distance
from emca.errors import DataError
from emca.io import atomic_save_image
from emca.pose.extract import SEVERAL_PEOPLE

# shoulders, elbows, wrists, hips, knees, ankles: the joints whose mean confidence decides "low confidence"
LIMB_JOINTS: tuple[int, ...] = tuple(range(2, 14))
# fps assumed for a video whose container does not say
DEFAULT_FPS = 25.0


@dataclass
class KeptCrop:
    """A crop that passed every per-crop check (written to the staging folder as ``name``)."""

    name: str
    identity: int
    video: int
    frame: int
    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    confidence: float  # mean over the limb joints
    colours: np.ndarray  # body_colours of the crop
    split: str = ""


@dataclass
class VideoSummary:
    path: str
    frames_read: int
    frames_searched: int
    frames_in_header: int
    fps: float
    size: tuple[int, int]
    detections: int
    identities_started: int
    splits: dict[str, int]


def image_name(identity: int, video: int, frame: int) -> str:
    """``0003_c1_000451.png``: identity first (Market's person-id rule reads it), then video ("camera") and frame."""
    return f"{identity:04d}_c{video + 1}_{frame:06d}.png"


class _VideoReader:
    """Frames of one video through OpenCV, each ``every``-th decoded; unreadable files raise DataError."""

    def __init__(self, path: Path) -> None:
        self.cv2 = import_cv2()
        self.path = path
        if path.is_dir():
            raise DataError(f"Video '{path}' is a folder; expected a video file (e.g. .mp4, .avi).")
        if not path.is_file():
            raise DataError(f"Video '{path}' does not exist.")
        capture = self.cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                raise DataError(
                    f"Cannot read video '{path}': OpenCV finds no video stream it can decode in it. Expected a video "
                    "file OpenCV reads (e.g. .mp4 or .avi with H.264, MPEG-4 or MJPG); convert it with ffmpeg."
                )
            ok, first = capture.read()
            if not ok or first is None:
                raise DataError(
                    f"Cannot read video '{path}': OpenCV opened it but cannot decode its first frame (an empty, "
                    "truncated or unsupported file). Convert it with ffmpeg, e.g. to H.264 .mp4."
                )
            fps = capture.get(self.cv2.CAP_PROP_FPS)
            self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else DEFAULT_FPS
            count = capture.get(self.cv2.CAP_PROP_FRAME_COUNT)
            self.frames_in_header = int(count) if count and math.isfinite(count) and count > 0 else 0
            self.size = (int(first.shape[0]), int(first.shape[1]))
        finally:
            capture.release()

    def frames(self, every: int) -> Iterator[tuple[int, np.ndarray]]:
        """(frame index, RGB frame) for frames 0, every, 2 * every, ... until the stream ends."""
        capture = self.cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                if index % every:
                    if not capture.grab():
                        break
                else:
                    ok, frame = capture.read()
                    if not ok or frame is None:
                        break
                    yield index, self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB)
                index += 1
            self.frames_read = index
        finally:
            capture.release()


class _Builder:
    def __init__(
        self,
        target: Target,
        options: FromVideoOptions,
        staging: Path,
        person_detector: PersonDetector,
        keypoint_detector: Callable[[], KeypointDetector],
        progress: bool,
    ) -> None:
        self.target = target
        self.options = options
        self.crops_dir = staging / ".crops"
        self.crops_dir.mkdir(parents=True)
        self.detect_people = person_detector
        self._make_keypoint_detector = keypoint_detector
        self._keypoint_detector: KeypointDetector | None = None
        self.progress = progress
        self.scale = pose_scale(target.height)
        self.rejected: Counter[str] = Counter()
        self.crops: list[KeptCrop] = []
        self.last_kept: dict[int, int] = {}  # identity -> frame of its last kept crop
        self.colours: dict[int, np.ndarray] = {}  # identity -> running body colours of its kept crops
        self.pending: dict[int, np.ndarray] = {}  # identity -> colours of its last crop rejected as an outlier
        self.identity_video: dict[int, int] = {}
        self.identity_started: dict[int, str] = {}
        self.next_identity = 1
        self.videos: list[VideoSummary] = []
        self.largest_window = 0  # rows of the largest window among crops that passed the edge and overlap checks

    @property
    def keypoint_detector(self) -> KeypointDetector:
        if self._keypoint_detector is None:  # built on first use: MediaPipe's graphs take a second
            self._keypoint_detector = self._make_keypoint_detector()
        return self._keypoint_detector

    def close(self) -> None:
        close = getattr(self._keypoint_detector, "close", None)
        if callable(close):
            close()

    def process_video(self, video_index: int, path: Path, reader: _VideoReader) -> None:
        options = self.options
        tracker = _Tracker(frame_rate=reader.fps / options.every)
        splitter = IdentitySplitter(options, reader.fps, first_identity=self.next_identity)
        detections = searched = 0
        total = reader.frames_in_header or None
        bar = tqdm(total=total, desc=f"from-video {path.name}", unit="frame", disable=not self.progress)
        previous = 0
        with bar:
            for index, frame in reader.frames(options.every):
                bar.update(index + 1 - previous)
                previous = index + 1
                searched += 1
                people = self.detect_people(frame)
                boxes = np.asarray(people.boxes, dtype=np.float64).reshape(-1, 4)
                scores = np.asarray(people.scores, dtype=np.float64).reshape(-1)
                valid = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                boxes, scores = boxes[valid], scores[valid]
                detections += len(boxes)
                track_ids = tracker.update(People(boxes, scores))
                self._process_frame(video_index, path, index, frame, boxes, track_ids, splitter)
                bar.set_postfix(people=detections, kept=len(self.crops), refresh=False)
        self.next_identity = splitter.next_identity
        self.identity_started.update(splitter.started)
        for identity in splitter.started:
            self.identity_video[identity] = video_index
        self.videos.append(
            VideoSummary(
                path=str(path),
                frames_read=reader.frames_read,
                frames_searched=searched,
                frames_in_header=reader.frames_in_header,
                fps=reader.fps,
                size=reader.size,
                detections=detections,
                identities_started=len(splitter.started),
                splits={reason: splitter.splits[reason] for reason in SPLIT_REASONS},
            )
        )
        if detections == 0:
            raise DataError(
                f"No people found in video '{path}': the person detector found nobody in any of the {searched} "
                f"frames searched (every {options.every}th of {reader.frames_read}). Expected a video of people "
                "seen whole, upright and at least about 100 px tall (what OpenCV's HOG people detector finds)."
            )

    def _process_frame(
        self,
        video_index: int,
        path: Path,
        index: int,
        frame: np.ndarray,
        boxes: np.ndarray,
        track_ids: np.ndarray,
        splitter: IdentitySplitter,
    ) -> None:
        options, target = self.options, self.target
        frame_rows, frame_cols = frame.shape[:2]
        tolerance = options.edge_tolerance
        iou = box_iou(boxes)
        np.fill_diagonal(iou, 0.0)
        windows = [
            crop_window(box, target.height, target.width, options.margin, (frame_rows, frame_cols)) for box in boxes
        ]
        inside = np.zeros((len(boxes), len(boxes)))  # [i, j]: the fraction of box j inside crop window i
        for i, (top, left, rows, cols) in enumerate(windows):
            inside[i] = _fraction_inside(boxes, (left, top, left + cols, top + rows))
        np.fill_diagonal(inside, 0.0)
        for i, box in enumerate(boxes):
            # the box widened by the margin (in box heights, on every side) must stay inside the frame
            reach = options.margin * (box[3] - box[1]) + tolerance
            at_edge = bool(
                box[0] - reach < 0 or box[1] - reach < 0 or box[2] + reach > frame_cols or box[3] + reach > frame_rows
            )
            # another person overlapping the box, or standing largely inside this crop
            overlapping = bool(len(boxes) > 1 and (iou[i].max() > options.max_overlap or inside[i].max() > 1 / 3))
            identity = splitter.observe(int(track_ids[i]), index, box) if track_ids[i] >= 0 else None
            if at_edge:
                self.rejected["edge"] += 1
                continue
            if overlapping:
                self.rejected["overlap"] += 1
                continue
            window = windows[i]
            self.largest_window = max(self.largest_window, window[2])
            if window[2] * options.max_upscale < target.height:
                self.rejected["too_small"] += 1
                continue
            if identity is None:
                self.rejected["untracked"] += 1
                continue
            if identity in self.last_kept and index - self.last_kept[identity] < options.min_gap:
                self.rejected["min_gap"] += 1
                continue
            source = CropSource(path, index, tuple(float(v) for v in box), window)
            kept = self._pose_crop(frame, source, identity, video_index, splitter)
            if kept is not None:
                self.last_kept[kept.identity] = index
                self.crops.append(kept)

    def _pose_crop(
        self, frame: np.ndarray, source: CropSource, identity: int, video_index: int, splitter: IdentitySplitter
    ) -> KeptCrop | None:
        target, options = self.target, self.options
        big = cut_window(frame, source.window, target.height * self.scale, target.width * self.scale)
        try:
            pose = self.keypoint_detector(big, source)
        except ImageFailure as failure:
            self.rejected["several_people" if failure.reason == SEVERAL_PEOPLE else "no_pose"] += 1
            return None
        keypoints = np.asarray(pose.keypoints, dtype=np.int64).reshape(NUM_JOINTS, 2)
        confidence = np.asarray(pose.confidence, dtype=np.float64).reshape(NUM_JOINTS)
        keypoints = np.where(
            (confidence >= options.min_keypoint_confidence)[:, None] & visible(keypoints)[:, None], keypoints, MISSING
        )
        # to the crop's pixels: the pose image is exactly `scale` times the crop on both sides
        big_rows, big_cols = big.shape[:2]
        present = visible(keypoints)
        keypoints[present, 0] = keypoints[present, 0] * target.height // big_rows
        keypoints[present, 1] = keypoints[present, 1] * target.width // big_cols
        outside = (
            (keypoints[:, 0] >= target.height) | (keypoints[:, 1] >= target.width) | (keypoints < MISSING).any(axis=1)
        )
        keypoints[outside] = MISSING
        limb_confidence = float(confidence[list(LIMB_JOINTS)].mean())
        if limb_confidence < options.min_keypoint_confidence:
            self.rejected["low_confidence"] += 1
            return None
        if not visible(keypoints)[list(REQUIRED_FOR_PAIRS)].all():
            self.rejected["missing_hip_or_shoulder"] += 1
            return None
        if off_centre(keypoints, target.height, target.width):
            self.rejected["off_centre"] += 1
            return None
        crop = cut_window(frame, source.window, target.height, target.width)
        colours = body_colours(crop, keypoints)
        previous = self.colours.get(identity)
        if previous is not None and colour_distance(colours, previous) > options.max_colour_distance:
            # one crop unlike its identity may be an odd view (an arm across the torso); two alike in a row are
            # someone else, whom the tracker now follows under this identity
            pending = self.pending.pop(identity, None)
            if pending is None or colour_distance(colours, pending) > options.max_colour_distance:
                self.pending[identity] = colours
                self.rejected["colour_outlier"] += 1
                return None
            identity = splitter.split(identity, "appearance")
            previous = (pending + colours) / 2
        else:
            self.pending.pop(identity, None)
        weight = options.colour_update
        self.colours[identity] = (
            colours
            if previous is None
            else np.where(
                np.isnan(previous),
                colours,
                np.where(np.isnan(colours), previous, (1 - weight) * previous + weight * colours),
            )
        )
        name = image_name(identity, video_index, source.frame)
        atomic_save_image(Image.fromarray(crop), self.crops_dir / name)
        return KeptCrop(name, identity, video_index, source.frame, source.box, keypoints, limb_confidence, colours)
