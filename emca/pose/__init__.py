"""Keypoints for users' own photos: MediaPipe extraction, COCO-18 mapping, fitting photos to a model.

    emca pose extract IMAGES_DIR --out annotations.csv

MediaPipe is optional (``pip install 'emca[pose]'``) and imported only when extraction runs; the
mapping and framing functions are plain numpy/PIL.
"""

from emca.pose.extract import ImageFailure, PoseExtractor, extract_directory, extract_keypoints
from emca.pose.framing import Framing, fit_to_model, invert_keypoints, transform_keypoints
from emca.pose.mediapipe_coco import MEDIAPIPE_LANDMARKS, landmarks_to_coco

__all__ = [
    "MEDIAPIPE_LANDMARKS",
    "Framing",
    "ImageFailure",
    "PoseExtractor",
    "extract_directory",
    "extract_keypoints",
    "fit_to_model",
    "invert_keypoints",
    "landmarks_to_coco",
    "transform_keypoints",
]
