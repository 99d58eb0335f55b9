"""COCO-18 keypoints from users' photos with MediaPipe Pose, one photo or a whole folder.

MediaPipe is an optional dependency (``pip install 'emca[pose]'``), imported only when extraction
runs. We use its legacy ``solutions.pose`` graph (mediapipe 0.10.14) because its model files ship
inside the wheel; the newer Tasks API needs a ``.task`` model downloaded separately. That graph
follows a single person and cannot say whether there are others, so several people are detected
with MediaPipe's face detector (also bundled): more than one face means the photo is ambiguous and
is reported instead of annotated. This is a proxy: people seen from behind or with faces too small
for the detector are not counted.

Images are read as stored, without applying an EXIF rotation, because the dataset loader reads them
the same way and keypoints must be in the stored frame; a photo whose EXIF says it is rotated is
reported so the user can save it upright.
"""

from __future__ import annotations

import contextlib
import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from tqdm import tqdm

from emca.data.annotations import write_annotations
from emca.data.keypoints import visible
from emca.data.photo import ImageFailure, read_image_uint8
from emca.errors import DataError, EmcaError
from emca.io import atomic_open
from emca.pose.mediapipe_coco import landmarks_to_coco

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# short labels of the failure report's "reason" column
NO_PERSON = "no person found"
SEVERAL_PEOPLE = "several people"


@dataclass(frozen=True)
class Failure:
    """A row of the failure report."""

    name: str
    reason: str
    detail: str


def import_mediapipe() -> ModuleType:
    """The ``mediapipe`` module, or an EmcaError saying how to install a version that has ``solutions.pose``."""
    try:
        import mediapipe
    except ImportError as err:
        raise EmcaError(
            f"Keypoint extraction needs MediaPipe, which cannot be imported ({err}). Install it with "
            "pip install 'emca[pose]'."
        ) from err
    if not hasattr(mediapipe, "solutions"):
        raise EmcaError(
            f"mediapipe {getattr(mediapipe, '__version__', '?')} has no legacy 'solutions' API, which emca "
            "uses because its pose model ships inside the package. Install the supported version with "
            "pip install 'emca[pose]'."
        )
    return mediapipe


def check_rgb_image(image: np.ndarray, user: str) -> None:
    """DataError unless ``image`` is an RGB uint8 array (H, W, 3); ``user`` names the caller in the message."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        described = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise DataError(f"{user} expects an RGB uint8 array of shape (H, W, 3), got a {described}.")


class PoseExtractor:
    """MediaPipe Pose (one person) plus its face detector (to notice several people), built once.

    Reuse one for many photos (building the graphs costs more than running them on one photo) and
    close it when done, e.g. ``with contextlib.closing(PoseExtractor()) as extractor:``.
    """

    def __init__(self, min_visibility: float = 0.5, min_face_confidence: float = 0.5) -> None:
        mediapipe = import_mediapipe()
        self.min_visibility = min_visibility
        # model_complexity=1 is the model bundled in the wheel; 0 and 2 are downloaded on first use
        self._pose = mediapipe.solutions.pose.Pose(static_image_mode=True, model_complexity=1)
        # model_selection=1: the full-range face model, for people up to ~5 m from the camera
        self._faces = mediapipe.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_face_confidence
        )

    def close(self) -> None:
        self._pose.close()
        self._faces.close()

    def landmarks(self, image: np.ndarray) -> np.ndarray:
        """MediaPipe's 33 pose landmarks (x, y, z, visibility) of the one person in ``image`` (H, W, 3) RGB uint8,
        x and y in [0, 1] of the width and height.

        Raises ImageFailure when nobody, or more than one face, is found.
        """
        check_rgb_image(image, "Pose extraction")
        with warnings.catch_warnings():
            # mediapipe 0.10.14 calls a protobuf API that protobuf 4.25 marks deprecated
            warnings.simplefilter("ignore", UserWarning)
            faces = self._faces.process(image).detections or []
            if len(faces) > 1:
                raise ImageFailure(
                    SEVERAL_PEOPLE,
                    f"{len(faces)} faces found; MediaPipe Pose follows only one person, so crop the photo "
                    "to the person you want.",
                )
            result = self._pose.process(image)
        if result.pose_landmarks is None:
            raise ImageFailure(NO_PERSON, "MediaPipe Pose found no person.")
        return np.array([(mark.x, mark.y, mark.z, mark.visibility) for mark in result.pose_landmarks.landmark])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Keypoints (18, 2) int64 (row, col) of the one person in ``image`` (H, W, 3) RGB uint8.

        Raises ImageFailure when nobody, or more than one face, is found.
        """
        keypoints = landmarks_to_coco(self.landmarks(image), image.shape[0], image.shape[1], self.min_visibility)
        if not visible(keypoints).any():
            raise ImageFailure(
                NO_PERSON, f"a person was detected but no joint reached visibility {self.min_visibility}."
            )
        return keypoints


def extract_keypoints(image: np.ndarray, min_visibility: float = 0.5) -> np.ndarray:
    """Keypoints (18, 2) int64 (row, col), -1 missing, of the one person in an RGB uint8 image (H, W, 3)."""
    with contextlib.closing(PoseExtractor(min_visibility)) as extractor:
        return extractor(image)


def list_images(image_dir: Path) -> list[Path]:
    """The image files directly inside ``image_dir`` (by suffix), sorted by name."""
    if not image_dir.is_dir():
        raise DataError(f"Image folder '{image_dir}' does not exist.")
    paths = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"Image folder '{image_dir}' holds no images (looked for {', '.join(IMAGE_SUFFIXES)}).")
    return paths


def failure_report_path(annotations_path: Path) -> Path:
    """Where the failure report of ``annotations_path`` goes: ``NAME-failures.csv`` beside it."""
    return annotations_path.with_name(f"{annotations_path.stem}-failures.csv")


def write_failure_report(path: Path, failures: list[Failure]) -> None:
    """CSV with header ``name,reason,detail``; written even when empty so no stale report survives."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "reason", "detail"])
        writer.writerows((failure.name, failure.reason, failure.detail) for failure in failures)


def extract_directory(
    image_dir: str | os.PathLike, out: str | os.PathLike, min_visibility: float = 0.5, progress: bool = True
) -> tuple[dict[str, np.ndarray], list[Failure]]:
    """Annotate every image in ``image_dir`` into the PATN CSV ``out`` plus its failure report.

    Returns the annotations written and the images that failed (see :func:`failure_report_path`).
    """
    image_dir, out = Path(image_dir), Path(out)
    paths = list_images(image_dir)
    annotations: dict[str, np.ndarray] = {}
    failures: list[Failure] = []
    with contextlib.closing(PoseExtractor(min_visibility)) as extractor:
        for path in tqdm(paths, desc=f"Extracting keypoints in {image_dir}", unit="img", disable=not progress):
            try:
                annotations[path.name] = extractor(read_image_uint8(path))
            except ImageFailure as failure:
                failures.append(Failure(path.name, failure.reason, str(failure)))
    write_annotations(out, annotations)
    write_failure_report(failure_report_path(out), failures)
    return annotations, failures
