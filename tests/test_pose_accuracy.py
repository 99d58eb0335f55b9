"""Pose accuracy as an evaluation metric (PCKh and the detection rate): known cases with a stand-in detector, the
scoring loop's handling of unscorable pairs, and MediaPipe itself on a real photo and on an empty image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from emca.data.keypoints import MISSING
from emca.metrics.definitions import PCKhSpec, PoseDetectedSpec, PoseDetector
from emca.pose.motion import from_keypoints, to_keypoints

# a standing person in a 64x32 image: (row, col) of the 18 COCO joints
PERSON = np.array(
    [[10, 16], [16, 16], [16, 10], [24, 8], [31, 7], [16, 22], [24, 24], [31, 25], [32, 12], [43, 12], [55, 12],
     [32, 20], [43, 20], [55, 20], [9, 14], [9, 18], [10, 12], [10, 20]]
)  # fmt: skip
HEAD = np.hypot(0, 8)  # the farthest pair of nose, eyes, ears: the two ears, 8 px apart


class StandIn(torch.nn.Module):
    """A detector that "finds" the given joints (float, NaN missing) in each image of the batch."""

    def __init__(self, found: np.ndarray) -> None:
        super().__init__()
        self.found = found

    def forward(self, images: torch.Tensor) -> np.ndarray:
        return self.found[: images.shape[0]]


def scores(found: np.ndarray, targets: np.ndarray) -> tuple[list[float], list[float]]:
    images = torch.zeros(len(targets), 3, 64, 32, dtype=torch.uint8)
    keypoints = torch.from_numpy(targets)
    model = StandIn(found)
    pckh = PCKhSpec(name="pckh").per_image(images, images, model, keypoints).tolist()
    detected = PoseDetectedSpec(name="pose_detected").per_image(images, images, model, keypoints).tolist()
    return pckh, detected


def test_the_target_itself_is_the_ceiling_a_shifted_skeleton_scores_lower_and_nobody_scores_zero() -> None:
    exact = from_keypoints(PERSON)
    near, far = exact + [0.0, 0.4 * HEAD], exact + [0.0, 0.6 * HEAD]  # within half a head, and beyond it
    half = exact.copy()
    half[:9] += [0.6 * HEAD, 0.0]  # 9 of the 18 joints too far
    nobody = np.full_like(exact, np.nan)
    pckh, detected = scores(np.stack([exact, near, far, half, nobody]), np.stack([PERSON] * 5))
    assert pckh == [1.0, 1.0, 0.0, 0.5, 0.0]
    assert detected == [1.0, 1.0, 1.0, 1.0, 0.0]


def test_only_the_targets_joints_count_and_a_target_without_a_head_is_not_scored() -> None:
    target = PERSON.copy()
    target[[4, 7]] = MISSING  # the wrists are not in the target: wrong detections there do not count
    found = from_keypoints(PERSON)
    found[[4, 7]] += 100
    headless = PERSON.copy()
    headless[[0, 14, 15, 16, 17]] = MISSING
    pckh, _ = scores(np.stack([found, found]), np.stack([target, headless]))
    assert pckh[0] == 1.0 and np.isnan(pckh[1])


def test_mediapipe_finds_a_real_person_where_the_target_says_and_nobody_in_an_empty_image() -> None:
    pytest.importorskip("mediapipe")
    from skimage.data import astronaut

    detector = PoseDetector(0.5, 256, "")
    try:
        photo = np.asarray(Image.fromarray(astronaut()).resize((128, 128), Image.LANCZOS))
        images = torch.from_numpy(np.stack([photo, np.full_like(photo, 255)])).permute(0, 3, 1, 2).contiguous()
        found = detector(images)
        # the target: MediaPipe's own joints on the photo at full size, brought to 128x128, independently
        full = detector(torch.from_numpy(astronaut()).permute(2, 0, 1)[None].contiguous())[0]
        target = torch.from_numpy(np.stack([to_keypoints((full + 0.5) / 4 - 0.5, 128, 128)] * 2))
        pckh = PCKhSpec(name="pckh").per_image(images, images, detector, target).tolist()
        detected = PoseDetectedSpec(name="pose_detected").per_image(images, images, detector, target).tolist()
    finally:
        detector.extractor.close()
    assert not np.isnan(found[0]).all() and np.isnan(found[1]).all()
    assert pckh[0] >= 0.8 and pckh[1] == 0.0 and detected == [1.0, 0.0]
