"""emca animate: pose normalisation, smoothing and held frames on known motions; a whole run on a video the test
draws (a stick figure walking, with known keypoints), decoded back; bad inputs stop before anything is written."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("supervision")
pytest.importorskip("cv2")

from emca.animate import AnimateOptions, Detectors, animate, parse_options  # noqa: E402
from emca.data.keypoints import MISSING, NUM_JOINTS  # noqa: E402
from emca.data.photo import ImageFailure  # noqa: E402
from emca.data.skeleton import draw_skeleton  # noqa: E402
from emca.data.video.detect import CropSource, People, ScoredPose  # noqa: E402
from emca.data.video.stream import probe, read_frames, write_video  # noqa: E402
from emca.errors import ConfigError, DataError  # noqa: E402
from emca.metrics.pckh import head_size, pckh  # noqa: E402
from emca.pose.motion import (  # noqa: E402
    OneEuroFilter,
    body_height,
    from_keypoints,
    ground_row,
    hip_column,
    hold_missing_frames,
    implausible_frames,
    jitter,
    normalise_motion,
    to_keypoints,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pipeline"
TEMPLATE = from_keypoints(
    np.array([[y, x] for x, y in json.loads((FIXTURE / "source_pose.json").read_text())["keypoints"]])
)
FRAME_ROWS, FRAME_COLS, FPS, FRAMES = 160, 240, 8, 24
HIDDEN = (10, 11, 12)  # frames where the walker is not found


def walker(frame: int, scale: float = 1.4, column: float = 30.0, speed: float = 5.0) -> np.ndarray:
    """The template pose scaled, walking right, its wrists swinging: (18, 2) float."""
    pose = TEMPLATE * scale + [10.0, column + speed * frame]
    pose[[4, 7], 1] += 6 * math.sin(frame * 0.8) * np.array([1, -1])
    return pose


# --- the motion, on known keypoints ---


def test_normalisation_puts_the_driver_on_the_sources_body_exactly() -> None:
    source = TEMPLATE + [3.0, 2.0]
    # a tall walker, and one that grows as it walks down the frame (a camera's perspective): height 60 + 0.5 row
    tall = np.stack([walker(t, scale=1.7) for t in range(12)])
    growing = np.stack([walker(t) for t in range(12)])
    for t in range(12):
        ground = ground_row(growing[t])
        target_height = 0.5 * (ground + 4.0 * t) + 60
        growing[t] = (growing[t] - [ground, 0]) * target_height / body_height(growing[t]) + [ground + 4.0 * t, 0]
    for motion in (tall, growing):
        normalised = normalise_motion(motion, source)
        for frame in normalised:
            assert body_height(frame) == pytest.approx(body_height(source), abs=1e-9)
            assert ground_row(frame) == pytest.approx(ground_row(source), abs=1e-9)
            assert hip_column(frame) == pytest.approx(hip_column(source), abs=1e-9)
    # the pose itself is kept: the normalised frame is the driver's, scaled about its ground point
    frame = normalise_motion(tall, source)[5]
    expected = (tall[5] - [ground_row(tall[5]), hip_column(tall[5])]) * (1 / 1.7) + [
        ground_row(source),
        hip_column(source),
    ]
    np.testing.assert_allclose(frame, expected, atol=1e-9)


def test_smoothing_keeps_a_still_pose_and_removes_jitter() -> None:
    still = np.stack([TEMPLATE] * 30)
    np.testing.assert_array_equal(OneEuroFilter(FPS)(still), still)
    truth = np.stack([walker(t, speed=1.0) for t in range(60)])
    noisy = truth + np.random.default_rng(0).normal(0, 2.0, truth.shape)
    smoothed = OneEuroFilter(FPS, min_cutoff=0.5, beta=0.02)(noisy)
    assert jitter(smoothed) < 0.5 * jitter(noisy)
    assert np.abs(smoothed - truth)[10:].mean() < np.abs(noisy - truth)[10:].mean()
    # a joint that goes missing restarts: no value is carried over the gap
    gappy = noisy.copy()
    gappy[20:25, 4] = np.nan
    filtered = OneEuroFilter(FPS)(gappy)
    assert np.isnan(filtered[20:25, 4]).all() and np.array_equal(filtered[25, 4], gappy[25, 4])


def test_frames_without_the_person_hold_the_last_pose() -> None:
    motion = np.stack([walker(t) for t in range(6)])
    found = np.array([False, True, False, False, True, False])
    held = hold_missing_frames(motion, found)
    for frame, source in enumerate([1, 1, 1, 1, 4, 4]):
        np.testing.assert_array_equal(held[frame], motion[source])
    with pytest.raises(ValueError, match="no frame"):
        hold_missing_frames(motion, np.zeros(6, dtype=bool))


def test_a_pose_of_the_wrong_height_is_dropped_as_implausible() -> None:
    motion = np.stack([walker(t) for t in range(10)])
    motion[4] = (motion[4] - motion[4, 1]) * 2.0 + motion[4, 1]  # a mis-detection twice the size
    assert implausible_frames(motion, np.ones(10, dtype=bool)).tolist() == [i == 4 for i in range(10)]


def test_pckh_counts_joints_within_half_a_head() -> None:
    reference = np.stack([TEMPLATE, TEMPLATE])
    size = head_size(TEMPLATE)
    # independently: the farthest pair of nose, eyes and ears
    head = TEMPLATE[[0, 14, 15, 16, 17]]
    assert size == pytest.approx(max(np.hypot(*(a - b)) for a in head for b in head))
    detected = reference.copy()
    detected[0, :9] += [0.4 * size, 0.0]  # within 0.5 head: still right
    detected[0, 9:] += [0.6 * size, 0.0]  # beyond: wrong
    detected[1] = np.nan  # the detector found nobody: every joint wrong
    result = pckh(detected, reference)
    assert (result.correct, result.joints, result.poses) == (9, 36, 2) and result.score == pytest.approx(0.25)


def test_keypoints_round_trip_and_leave_the_frame_as_missing() -> None:
    keypoints = np.full((NUM_JOINTS, 2), MISSING)
    keypoints[:3] = [[5, 6], [0, 0], [9, 3]]
    np.testing.assert_array_equal(to_keypoints(from_keypoints(keypoints), 10, 10), keypoints)
    assert (to_keypoints(from_keypoints(keypoints) + [5, 0], 10, 10)[[0, 2]] == MISSING).all()


# --- a whole run on a drawn video ---


def truth(frame: int) -> np.ndarray:
    return walker(frame)


@pytest.fixture(scope="module")
def walk_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("walk") / "walk.avi"
    frames = (draw_skeleton(to_keypoints(truth(t), FRAME_ROWS, FRAME_COLS), FRAME_ROWS, FRAME_COLS)
              for t in range(FRAMES))  # fmt: skip
    assert write_video(path, frames, Fraction(FPS), "mjpeg") == FRAMES
    return path


def known_people():  # noqa: ANN201 (a PersonDetector)
    """The drawn walker's box in each frame, frames taken in order (the tracking pass reads them once)."""
    shown = iter(range(FRAMES))

    def detect(frame: np.ndarray) -> People:
        index = next(shown)
        if index in HIDDEN:
            return People.none()
        pose = truth(index)
        x0, y0 = np.nanmin(pose[:, 1]) - 4, np.nanmin(pose[:, 0]) - 4
        x1, y1 = np.nanmax(pose[:, 1]) + 4, np.nanmax(pose[:, 0]) + 4
        return People(np.array([[x0, y0, x1, y1]]), np.array([0.9]))

    return detect


def known_keypoints(min_visibility: float):  # noqa: ANN201 (a KeypointDetector)
    def detect(image: np.ndarray, source: CropSource) -> ScoredPose:
        top, left, rows, cols = source.window
        pose = truth(source.frame)
        crop = ((pose - [top, left] + 0.5) * [image.shape[0] / rows, image.shape[1] / cols] - 0.5).round()
        return ScoredPose(crop.astype(np.int64), np.ones(NUM_JOINTS))

    return detect


def nobody(min_visibility: float):  # noqa: ANN201
    def detect(image: np.ndarray) -> np.ndarray:
        raise ImageFailure("no_person", "no person (a stand-in)")

    return detect


STANDINS = Detectors(people=known_people, keypoints=known_keypoints, generated=nobody)


def options(tmp_path: Path, video: Path, **extra: object) -> AnimateOptions:
    return AnimateOptions(
        ckpt=str(FIXTURE / "model"),
        source=str(FIXTURE / "source.png"),
        source_pose=str(FIXTURE / "source_pose.json"),
        driving=str(video),
        out=str(tmp_path / "out" / "moving.mp4"),
        device="cpu",
        **extra,
    )


def test_a_run_writes_the_video_the_side_by_side_and_the_report(walk_video: Path, tmp_path: Path) -> None:
    report = animate(options(tmp_path, walk_video, side_by_side=True), STANDINS)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["moving.mp4", "moving_report.json", "moving_side_by_side.mp4"]
    video = probe(out / "moving.mp4")
    frames = list(read_frames(out / "moving.mp4"))
    # the model is 32x16: each pixel an 8x8 square (256 px tall), at the driving video's frame rate
    assert len(frames) == FRAMES and video.fps == FPS and (video.height, video.width) == (256, 128)
    assert video.codec == report["output"]["codec"]
    side = list(read_frames(out / "moving_side_by_side.mp4"))
    assert len(side) == FRAMES and side[0].shape[0] == 256 and side[0].shape[1] > 256
    assert json.loads((out / "moving_report.json").read_text()) == json.loads(json.dumps(report))
    # ByteTrack confirms a track on its second frame, so frame 0 is not followed either
    assert report["frames"] == FRAMES and report["frames_without_person"] == 1 + len(HIDDEN)
    assert report["pose_accuracy"]["frames_where_mediapipe_found_nobody"] == FRAMES
    assert report["seconds_per_frame"]["total"] > 0
    # the held frames repeat the last pose found before them: the generated frames are identical
    model = [frame[::8, ::8] for frame in frames]
    assert all(np.abs(model[t].astype(int) - model[HIDDEN[0] - 1].astype(int)).mean() < 3 for t in HIDDEN)


def test_trim_keeps_the_frames_from_the_first_appearance_to_the_last(walk_video: Path, tmp_path: Path) -> None:
    report = animate(options(tmp_path, walk_video, trim=True, side_by_side=True), STANDINS)
    # frame 0 is not followed (ByteTrack confirms on the second frame); the hidden frames inside stay, held
    assert (report["first_frame"], report["frames"], report["frames_without_person"]) == (1, FRAMES - 1, len(HIDDEN))
    assert len(list(read_frames(tmp_path / "out" / "moving_side_by_side.mp4"))) == FRAMES - 1


@pytest.mark.parametrize("case", ["unreadable video", "nobody in the video", "nobody in the photo", "bad person"])
def test_bad_inputs_stop_with_a_message_and_write_nothing(walk_video: Path, tmp_path: Path, case: str) -> None:
    detectors, extra, video = STANDINS, {}, walk_video
    if case == "unreadable video":
        video = tmp_path / "notes.mp4"
        video.write_text("not a video")
        expected, error = "Cannot read video", DataError
    elif case == "nobody in the video":
        detectors = Detectors(people=lambda: lambda frame: People.none(), keypoints=known_keypoints, generated=nobody)
        expected, error = "No person found in the driving video", DataError
    elif case == "nobody in the photo":
        pytest.importorskip("mediapipe")
        blank = tmp_path / "blank.png"
        from PIL import Image

        Image.new("RGB", (64, 96), "white").save(blank)
        extra = {"source": str(blank), "source_pose": None}
        expected, error = "blank.png", DataError
    else:
        extra = {"person": 3}
        expected, error = "person=3: the driving video has 1 tracked people", ConfigError
    chosen = options(tmp_path, video)
    chosen = AnimateOptions(**{**chosen.__dict__, **extra})
    with pytest.raises(error, match=expected):
        animate(chosen, detectors)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_options_are_checked_where_the_command_starts() -> None:
    with pytest.raises(ConfigError, match="driving, out: required"):
        parse_options(["ckpt=m", "source=p.png"])
    with pytest.raises(ConfigError, match="out=result.gif: expected a video file name"):
        parse_options(["ckpt=m", "source=p.png", "driving=v.mp4", "out=result.gif"])
    with pytest.raises(ConfigError, match="'min_cutoff' is 0.0; expected a value > 0"):
        parse_options(["ckpt=m", "source=p.png", "driving=v.mp4", "out=r.mp4", "min_cutoff=0"])


def test_the_demo_page_animates_and_says_what_went_wrong(walk_video: Path, tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    from emca.demo import DemoOptions, PoseTransferDemo, build_app

    demo = PoseTransferDemo(DemoOptions(ckpt=str(FIXTURE / "model"), device="cpu"))
    source, pose = str(FIXTURE / "source.png"), str(FIXTURE / "source_pose.json")
    video, report, message = demo.animation(source, str(walk_video), source_pose=pose, detectors=STANDINS)
    assert video is not None and video.endswith("animation_side_by_side.mp4") and Path(video).is_file()
    assert json.loads(report)["frames"] == FRAMES and f"Animated {FRAMES} frames" in message
    assert len(list(read_frames(Path(video)))) == FRAMES
    nothing = Detectors(people=lambda: lambda frame: People.none(), keypoints=known_keypoints, generated=nobody)
    video, report, message = demo.animation(source, str(walk_video), source_pose=pose, detectors=nothing)
    assert video is None and message.startswith("Could not animate: No person found in the driving video 'the video'")
    assert demo.animation(source, None)[2].startswith("Upload a photo")
    build_app(DemoOptions(), demo)  # the page with its Animate tab builds
