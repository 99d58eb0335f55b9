"""emca.pose: MediaPipe -> COCO-18 mapping, photo framing, and the extraction command."""

from __future__ import annotations

import contextlib
import csv
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emca.data.annotations import read_annotations
from emca.data.keypoints import JOINT_NAMES, MISSING, NUM_JOINTS
from emca.errors import DataError
from emca.pose import fit_to_model, invert_keypoints, landmarks_to_coco, transform_keypoints
from emca.pose.__main__ import main

# MediaPipe Pose landmark indices from its documentation (the 33-landmark model card), per COCO joint name
MEDIAPIPE_INDEX = {
    "nose": 0, "left_eye": 2, "right_eye": 5, "left_ear": 7, "right_ear": 8, "left_shoulder": 11,
    "right_shoulder": 12, "left_elbow": 13, "right_elbow": 14, "left_wrist": 15, "right_wrist": 16,
    "left_hip": 23, "right_hip": 24, "left_knee": 25, "right_knee": 26, "left_ankle": 27, "right_ankle": 28,
}  # fmt: skip
HEIGHT, WIDTH = 200, 100


def joint(name: str) -> int:
    return JOINT_NAMES.index(name)


def distinct_landmarks() -> np.ndarray:
    """(33, 4) landmarks at distinct in-image positions, all fully visible."""
    index = np.arange(33)
    return np.stack([(index + 1) / 40, (index + 1) / 35, np.zeros(33), np.ones(33)], axis=1)


# --- mapping ---------------------------------------------------------------------------------------------


def test_every_joint_comes_from_the_landmark_of_the_same_body_part() -> None:
    landmarks = distinct_landmarks()
    keypoints = landmarks_to_coco(landmarks, HEIGHT, WIDTH)
    assert keypoints.shape == (NUM_JOINTS, 2) and keypoints.dtype == np.int64
    for name, index in MEDIAPIPE_INDEX.items():
        x, y = landmarks[index, :2]
        assert tuple(keypoints[joint(name)]) == (int(y * HEIGHT), int(x * WIDTH)), name


def test_neck_is_the_midpoint_of_the_shoulders() -> None:
    landmarks = distinct_landmarks()
    landmarks[MEDIAPIPE_INDEX["left_shoulder"], :2] = (0.70, 0.30)  # person's left: image right
    landmarks[MEDIAPIPE_INDEX["right_shoulder"], :2] = (0.30, 0.20)
    keypoints = landmarks_to_coco(landmarks, HEIGHT, WIDTH)
    assert tuple(keypoints[joint("neck")]) == (50, 50)  # rows (60 + 40) / 2, cols (70 + 30) / 2
    assert keypoints[joint("left_shoulder"), 1] == 70 and keypoints[joint("right_shoulder"), 1] == 30


def test_weak_or_outside_landmarks_are_missing_and_take_the_neck_with_them() -> None:
    landmarks = distinct_landmarks()
    landmarks[MEDIAPIPE_INDEX["left_wrist"], 3] = 0.49
    landmarks[MEDIAPIPE_INDEX["right_wrist"], 3] = 0.5  # the threshold itself is kept
    landmarks[MEDIAPIPE_INDEX["left_ankle"], 1] = 1.0  # one past the bottom row
    landmarks[MEDIAPIPE_INDEX["right_ankle"], 0] = -0.01
    landmarks[MEDIAPIPE_INDEX["right_shoulder"], 3] = 0.1
    keypoints = landmarks_to_coco(landmarks, HEIGHT, WIDTH)
    for name in ("left_wrist", "left_ankle", "right_ankle", "right_shoulder", "neck"):
        assert tuple(keypoints[joint(name)]) == (MISSING, MISSING), name
    assert (keypoints[joint("right_wrist")] >= 0).all() and (keypoints[joint("left_shoulder")] >= 0).all()

    strict = landmarks_to_coco(distinct_landmarks() * [1, 1, 1, 0.8], HEIGHT, WIDTH, min_visibility=0.9)
    assert (strict == MISSING).all()


def test_landmarks_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(DataError, match=r"shape \(33, 4\).*got shape \(17, 4\)"):
        landmarks_to_coco(np.zeros((17, 4)), HEIGHT, WIDTH)


# --- framing ---------------------------------------------------------------------------------------------


def spread_keypoints(height: int, width: int) -> np.ndarray:
    """A body-like spread of 18 joints inside a (height, width) photo, with two joints missing."""
    rng = np.random.default_rng(0)
    keypoints = np.stack(
        [
            rng.integers(height // 8, height - height // 8, NUM_JOINTS),
            rng.integers(width // 4, width * 2 // 3, NUM_JOINTS),
        ],
        axis=1,
    )
    keypoints[[joint("left_wrist"), joint("right_ear")]] = MISSING
    return keypoints


@pytest.mark.parametrize(("mode", "photo_size"), [("pad", (300, 200)), ("crop", (300, 200)), ("pad", (90, 160))])
def test_framing_round_trip_recovers_keypoints(mode: str, photo_size: tuple[int, int]) -> None:
    keypoints = spread_keypoints(*photo_size)
    photo = np.zeros((*photo_size, 3), np.uint8)
    framed, moved, framing = fit_to_model(photo, keypoints, 256, 176, mode=mode)
    assert framed.shape == (256, 176, 3) and framing.model_size == (256, 176)
    kept = (moved != MISSING).all(axis=1)
    assert kept.sum() >= 12  # most joints survive; missing ones stay missing
    assert (moved[[joint("left_wrist"), joint("right_ear")]] == MISSING).all()
    restored = invert_keypoints(moved, framing)
    assert np.abs(restored[kept] - keypoints[kept]).max() <= 1


@pytest.mark.parametrize(("mode", "photo_size"), [("pad", (300, 200)), ("crop", (300, 200)), ("pad", (100, 60))])
def test_a_bright_pixel_at_a_joint_lands_on_the_transformed_joint(mode: str, photo_size: tuple[int, int]) -> None:
    keypoints = spread_keypoints(*photo_size)
    for name in ("nose", "left_knee", "right_shoulder"):
        photo = np.zeros((*photo_size, 3), np.uint8)
        photo[tuple(keypoints[joint(name)])] = 255
        framed, moved, _ = fit_to_model(photo, keypoints, 256, 176, mode=mode, fill=(0, 0, 0))
        brightest = np.unravel_index(framed.sum(axis=2).argmax(), framed.shape[:2])
        assert np.abs(np.asarray(brightest) - moved[joint(name)]).max() <= 1, name


def test_pad_centres_the_person_and_crop_leaves_no_border() -> None:
    photo = np.full((300, 400, 3), 100, np.uint8)  # landscape photo, person on the left
    keypoints = np.full((NUM_JOINTS, 2), MISSING)
    keypoints[joint("left_shoulder")] = (100, 140)
    keypoints[joint("right_ankle")] = (280, 60)
    fill = (0, 0, 255)

    framed, moved, framing = fit_to_model(photo, keypoints, 256, 176, mode="pad", fill=fill)
    assert framing.scale == pytest.approx((176 / 400, 176 / 400), abs=0.01)
    box_centre = (moved[joint("left_shoulder"), 1] + moved[joint("right_ankle"), 1]) / 2
    assert abs(box_centre - 176 / 2) <= 1.5
    border = (framed == fill).all(axis=2)
    assert border[128, 0] and not border[128, -1]  # shifted right: padding on the left only
    assert border[0].all() and border[-1].all()  # letterboxed above and below

    framed, moved, framing = fit_to_model(photo, keypoints, 256, 176, mode="crop", fill=fill)
    assert framing.offset[1] == 0  # the person is too far left to be centred without a border
    assert not (framed == fill).all(axis=2).any()


def test_keypoints_outside_the_other_frame_become_missing() -> None:
    photo = np.zeros((300, 400, 3), np.uint8)
    keypoints = np.full((NUM_JOINTS, 2), MISSING)
    keypoints[joint("right_wrist")] = (150, 50)  # arms spread wider than a portrait crop of the photo
    keypoints[joint("neck")] = (150, 200)
    keypoints[joint("left_wrist")] = (150, 350)
    _, moved, framing = fit_to_model(photo, keypoints, 256, 176, mode="crop")
    assert (moved[[joint("right_wrist"), joint("left_wrist")]] == MISSING).all()
    assert (moved[joint("neck")] != MISSING).all()
    assert (transform_keypoints(invert_keypoints(moved, framing), framing) == moved).all()

    _, _, padded = fit_to_model(photo, keypoints, 256, 176, mode="pad")
    on_padding = np.full((NUM_JOINTS, 2), MISSING)
    on_padding[joint("nose")] = (5, 88)  # the letterbox above the photo
    assert (invert_keypoints(on_padding, padded) == MISSING).all()


def test_fit_to_model_refuses_bad_input() -> None:
    photo = np.zeros((30, 20, 3), np.uint8)
    keypoints = np.full((NUM_JOINTS, 2), MISSING)
    with pytest.raises(ValueError, match="mode must be one of pad, crop, got 'stretch'"):
        fit_to_model(photo, keypoints, 256, 176, mode="stretch")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"keypoints of shape \(18, 2\)"):
        fit_to_model(photo, keypoints[:17], 256, 176)
    with pytest.raises(DataError, match="RGB uint8 array.*float32"):
        fit_to_model(photo.astype(np.float32), keypoints, 256, 176)


# --- extraction command ----------------------------------------------------------------------------------


def test_extract_without_mediapipe_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail
    Image.new("RGB", (20, 30)).save(tmp_path / "person.png")
    assert main(["extract", str(tmp_path), "--out", str(tmp_path / "out.csv")]) == 2
    assert "pip install 'emca[pose]'" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_extract_names_a_missing_or_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out.csv")]) == 2
    assert f"'{tmp_path / 'nowhere'}' does not exist" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["extract", str(tmp_path), "--out", str(tmp_path / "out.csv")]) == 2
    assert f"'{tmp_path}' holds no images" in capsys.readouterr().err


# Where the astronaut's joints are in skimage.data.astronaut() (512 x 512), read off the image by eye
ASTRONAUT_JOINTS = {
    "nose": (120, 222),
    "neck": (245, 210),
    "right_shoulder": (250, 105),
    "left_shoulder": (250, 315),
}
TOLERANCE = 0.1 * 512


@pytest.fixture(scope="module")
def extraction_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """Run the CLI once on a folder of real, empty, crowded, broken and rotated photos."""
    pytest.importorskip("mediapipe")
    from skimage.data import astronaut

    photos = tmp_path_factory.mktemp("photos")
    Image.fromarray(astronaut()).save(photos / "astronaut.jpg", quality=95)
    Image.fromarray(np.concatenate([astronaut(), astronaut()], axis=1)).save(photos / "two.jpg", quality=95)
    Image.new("RGB", (176, 256), (128, 128, 128)).save(photos / "grey.png")
    (photos / "broken.jpg").write_bytes(b"this is not a jpeg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(astronaut()).save(photos / "sideways.jpg", exif=exif)
    (photos / "notes.txt").write_text("ignored: not an image suffix")
    out = photos / "annotations.csv"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["extract", str(photos), "--out", str(out)])
    return out, status, printed.getvalue()


def test_extract_finds_the_astronauts_joints(extraction_run: tuple[Path, int, str]) -> None:
    out, status, _ = extraction_run
    assert status == 0
    annotations = read_annotations(out)
    assert list(annotations) == ["astronaut.jpg"]
    keypoints = annotations["astronaut.jpg"]
    for name, true_place in ASTRONAUT_JOINTS.items():
        distance = np.hypot(*(keypoints[joint(name)] - np.asarray(true_place)))
        assert distance < TOLERANCE, (name, keypoints[joint(name)], true_place)
    # she faces the camera, so her left shoulder is on the image's right
    assert keypoints[joint("left_shoulder"), 1] > keypoints[joint("right_shoulder"), 1]


def test_extract_reports_each_failed_image(extraction_run: tuple[Path, int, str]) -> None:
    out, _, printed = extraction_run
    assert "Keypoints of 1 of 5 images" in printed and "4 image(s) failed" in printed
    with open(out.with_name("annotations-failures.csv"), encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    reasons = {row["name"]: row["reason"] for row in rows}
    assert reasons == {
        "broken.jpg": "unreadable",
        "grey.png": "no person found",
        "sideways.jpg": "rotated by EXIF",
        "two.jpg": "several people",
    }
    details = {row["name"]: row["detail"] for row in rows}
    assert "broken.jpg" in details["broken.jpg"] and "2 faces found" in details["two.jpg"]


def test_mediapipe_landmark_names_match_our_table() -> None:
    mediapipe = pytest.importorskip("mediapipe")
    from emca.pose import MEDIAPIPE_LANDMARKS

    assert MEDIAPIPE_LANDMARKS == tuple(mark.name.lower() for mark in mediapipe.solutions.pose.PoseLandmark)
    for name, index in MEDIAPIPE_INDEX.items():
        assert mediapipe.solutions.pose.PoseLandmark[name.upper()] == index


def test_extract_keypoints_refuses_a_float_image() -> None:
    pytest.importorskip("mediapipe")
    from emca.pose import extract_keypoints

    with pytest.raises(DataError, match=r"RGB uint8 array of shape \(H, W, 3\), got a float64"):
        extract_keypoints(np.zeros((64, 64, 3)))
