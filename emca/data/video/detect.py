"""Detectors: people in a frame (:class:`People`, :data:`PersonDetector`, the default HOG detector, box
overlaps) and keypoints in a crop (:class:`CropSource`, :class:`ScoredPose`, the :data:`KeypointDetector` protocol
and :class:`MediaPipeKeypoints`, its default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from emca.data.keypoints import JOINT_NAMES
from emca.data.video.options import import_cv2
from emca.pose.extract import PoseExtractor
from emca.pose.mediapipe_coco import MEDIAPIPE_LANDMARKS, landmarks_to_coco


class People(NamedTuple):
    """A detector's answer for one frame: ``boxes`` (N, 4) float (x0, y0, x1, y1) px, ``scores`` (N,) in [0, 1]."""

    boxes: np.ndarray
    scores: np.ndarray

    @staticmethod
    def none() -> People:
        return People(np.zeros((0, 4)), np.zeros(0))


# an RGB uint8 frame (H, W, 3) -> the people in it, boxes around each person's body
PersonDetector = Callable[[np.ndarray], People]

# the default HOG people detector looks at a 64x128 window holding a person about 32x96 px in its middle
_HOG_PERSON_INSET = (0.25, 0.125)  # (x, y) fraction of the window cut from each side


def hog_people_detector(win_stride: int = 8, scale: float = 1.05, nms_iou: float = 0.3) -> PersonDetector:
    """OpenCV's HOG + linear SVM people detector (``HOGDescriptor_getDefaultPeopleDetector``) as a PersonDetector.

    Overlapping windows are merged by non-maximum suppression (IoU ``nms_iou``), each window is shrunk to the
    person inside it, and the SVM margin ``w`` becomes the score ``1 - exp(-w)``. It finds upright people about
    100 px tall or more; smaller ones are missed.
    """
    cv2 = import_cv2()
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(frame: np.ndarray) -> People:
        rects, weights = hog.detectMultiScale(frame, winStride=(win_stride, win_stride), padding=(8, 8), scale=scale)
        if len(rects) == 0:
            return People.none()
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        keep = np.asarray(cv2.dnn.NMSBoxes(rects.tolist(), weights.tolist(), 0.0, nms_iou), dtype=np.int64).reshape(-1)
        rects, weights = rects[keep], weights[keep]
        inset = np.asarray(_HOG_PERSON_INSET)
        x0 = rects[:, 0] + inset[0] * rects[:, 2]
        y0 = rects[:, 1] + inset[1] * rects[:, 3]
        x1 = rects[:, 0] + (1 - inset[0]) * rects[:, 2]
        y1 = rects[:, 1] + (1 - inset[1]) * rects[:, 3]
        height, width = frame.shape[:2]
        boxes = np.stack([x0.clip(0, width), y0.clip(0, height), x1.clip(0, width), y1.clip(0, height)], axis=1)
        return People(boxes, 1.0 - np.exp(-np.maximum(weights, 0.0)))

    return detect


def box_iou(boxes: np.ndarray) -> np.ndarray:
    """(N, N) IoU of xyxy boxes (the diagonal is 1)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    low = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    high = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=2)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _fraction_inside(boxes: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    """(N,) fraction of each xyxy box's area inside ``region`` (x0, y0, x1, y1)."""
    low = np.maximum(boxes[:, :2], region[:2])
    high = np.minimum(boxes[:, 2:], region[2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    return inter / np.maximum(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1), 1e-9)


@dataclass(frozen=True)
class CropSource:
    """Where a crop came from: ``window`` (top, left, height, width) in the frame's pixels, possibly beyond it."""

    video: Path
    frame: int
    box: tuple[float, float, float, float]
    window: tuple[int, int, int, int]


class ScoredPose(NamedTuple):
    """Keypoints (18, 2) int64 (row, col), -1 missing, and each joint's confidence (18,) in [0, 1]."""

    keypoints: np.ndarray
    confidence: np.ndarray


# (the crop upscaled for the pose, RGB uint8; where it came from) -> its pose in that image's pixels; raises
# emca.data.photo.ImageFailure (emca.pose.extract's NO_PERSON or SEVERAL_PEOPLE) when it shows no single person
KeypointDetector = Callable[[np.ndarray, CropSource], ScoredPose]

_MEDIAPIPE_SOURCE = tuple(MEDIAPIPE_LANDMARKS.index(name) if name != "neck" else -1 for name in JOINT_NAMES)
_SHOULDER_LANDMARKS = (MEDIAPIPE_LANDMARKS.index("left_shoulder"), MEDIAPIPE_LANDMARKS.index("right_shoulder"))


class MediaPipeKeypoints(PoseExtractor):
    """``emca.pose``'s PoseExtractor (MediaPipe Pose plus its face check) as a KeypointDetector.

    Also gives each joint's confidence (its landmark's MediaPipe visibility; the neck's is the smaller of the
    shoulders'), from ``PoseExtractor.landmarks``; joints below ``min_confidence`` are missing.
    """

    def __init__(self, min_confidence: float = 0.5) -> None:
        super().__init__(min_visibility=min_confidence)

    def __call__(self, image: np.ndarray, source: CropSource | None = None) -> ScoredPose:  # type: ignore[override]
        landmarks = self.landmarks(image)
        keypoints = landmarks_to_coco(landmarks, image.shape[0], image.shape[1], self.min_visibility)
        visibility = landmarks[:, 3]
        confidence = np.array([visibility[i] if i >= 0 else 0.0 for i in _MEDIAPIPE_SOURCE])
        confidence[JOINT_NAMES.index("neck")] = min(
            visibility[_SHOULDER_LANDMARKS[0]], visibility[_SHOULDER_LANDMARKS[1]]
        )
        return ScoredPose(keypoints, np.clip(confidence, 0.0, 1.0))
