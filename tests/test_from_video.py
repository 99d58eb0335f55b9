"""``python -m emca.data from-video``: a dataset from a video of synthetic people walking, with known identities.

The test draws the video itself (cv2.VideoWriter, MJPG) from ``emca.data.synthetic`` people, so it knows which
person every crop shows and where its joints are. MediaPipe is unreliable on cartoon people, so the main runs
use a keypoint detector that returns the drawn joints and a person detector that segments the plain background;
the real HOG detector and the real MediaPipe path are tested on their own below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("supervision")

from emca.data.__main__ import main  # noqa: E402
from emca.data.annotations import read_annotations, read_pairs  # noqa: E402
from emca.data.dataset import make_layout  # noqa: E402
from emca.data.keypoints import MISSING, visible  # noqa: E402
from emca.data.synthetic import render_identity  # noqa: E402
from emca.data.video import (  # noqa: E402
    CropSource,
    FromVideoOptions,
    IdentitySplitter,
    MediaPipeKeypoints,
    People,
    ScoredPose,
    box_iou,
    build_from_videos,
    hog_people_detector,
    parse_preset,
    pose_difference,
)
from emca.errors import ConfigError, DataError  # noqa: E402
from emca.options import FLAGS, parse  # noqa: E402

BACKGROUND = (90, 90, 90)
FRAME_ROWS, FRAME_COLS = 176, 480
PERSON_ROWS = 100
GROUND = 150  # the row the feet stand on
FRAMES = 40
FPS = 10
SPEED = 2  # px per frame, to the right
POSES = 6


@dataclass(frozen=True)
class Sprite:
    image: np.ndarray  # (rows, cols, 3) uint8
    mask: np.ndarray  # (rows, cols) bool
    keypoints: np.ndarray  # (18, 2) in the sprite's pixels, -1 missing


def sprites(identity: int) -> list[Sprite]:
    """POSES drawings of one synthetic person, cut out of their plain backdrop and scaled to PERSON_ROWS."""
    drawn = []
    for image, keypoints in render_identity(7, identity, POSES + 4, 128, 64, background="plain"):
        mask = np.abs(image.astype(int) - image[0, 0].astype(int)).max(axis=2) > 20
        rows, cols = np.nonzero(mask)
        if rows.min() == 0 or rows.max() == 127:  # zoomed past the feet or the head
            continue
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        scale = PERSON_ROWS / (bottom - top)
        size = (max(1, round((right - left) * scale)), PERSON_ROWS)
        sprite = cv2.resize(image[top:bottom, left:right], size, interpolation=cv2.INTER_AREA)
        sprite_mask = cv2.resize(mask[top:bottom, left:right].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        present = visible(keypoints)
        moved = np.full_like(keypoints, MISSING)
        moved[present] = np.floor((keypoints[present] - [top, left] + 0.5) * scale).astype(np.int64)
        drawn.append(Sprite(sprite, sprite_mask.astype(bool), moved))
        if len(drawn) == POSES:
            break
    assert len(drawn) == POSES
    return drawn


@pytest.fixture(scope="module")
def people() -> dict[int, list[Sprite]]:
    return {identity: sprites(identity) for identity in range(4)}


@dataclass(frozen=True)
class Drawn:
    """One person in one frame: who, the box (x0, y0, x1, y1) and joints (row, col) in the frame's pixels."""

    person: int
    box: tuple[int, int, int, int]
    keypoints: np.ndarray


def write_video(
    path: Path, people: dict[int, list[Sprite]], starts: dict[int, int], frames: int = FRAMES, swap: dict | None = None
) -> dict[int, list[Drawn]]:
    """An MJPG .avi of ``people`` walking right from column ``starts[person]``; returns what each frame shows.

    ``swap`` {frame: (old, new)} draws person ``new`` in ``old``'s place from that frame on (an identity switch
    that no tracker can see).
    """
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (FRAME_COLS, FRAME_ROWS))
    shown: dict[int, list[Drawn]] = {}
    for t in range(frames):
        frame = np.empty((FRAME_ROWS, FRAME_COLS, 3), np.uint8)
        frame[:] = BACKGROUND
        shown[t] = []
        for slot, start in starts.items():
            person = slot
            for at, (old, new) in (swap or {}).items():
                if slot == old and t >= at:
                    person = new
            sprite = people[person][(t + slot) % POSES]
            left, top = start + SPEED * t, GROUND - PERSON_ROWS
            rows, cols = sprite.mask.shape
            x0, x1 = max(left, 0), min(left + cols, FRAME_COLS)
            part = slice(max(x0 - left, 0), max(x1 - left, 0))
            if sprite.mask[:, part].sum() < 800:  # not in the picture yet, or a sliver too small to detect: not drawn
                continue
            region = frame[top : top + rows, x0:x1]
            region[:] = np.where(sprite.mask[:, part, None], sprite.image[:, part], region)
            keypoints = sprite.keypoints.copy()
            present = visible(keypoints)
            keypoints[present] += [top, left]
            outside = (keypoints[:, 1] < 0) | (keypoints[:, 1] >= FRAME_COLS)
            keypoints[outside & present] = MISSING
            columns = np.nonzero(sprite.mask.any(axis=0))[0] + left
            box = (max(int(columns.min()), 0), top, min(int(columns.max()) + 1, FRAME_COLS), top + rows)
            shown[t].append(Drawn(person, box, keypoints))
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return shown


def segmenting_detector(frame: np.ndarray) -> People:
    """People are whatever differs from the plain background: one box per blob."""
    mask = (np.abs(frame.astype(int) - BACKGROUND).max(axis=2) > 30).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    boxes = [(x, y, x + w, y + h) for x, y, w, h, area in stats[1:count] if area >= 300]
    return People(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.full(len(boxes), 0.9))


def who(shown: dict[int, list[Drawn]], frame: int, box: tuple[float, ...]) -> Drawn:
    """The drawn person whose box holds the centre of ``box`` in ``frame``."""
    centre_col, centre_row = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    inside = [d for d in shown[frame] if d.box[0] <= centre_col <= d.box[2] and d.box[1] <= centre_row <= d.box[3]]
    assert len(inside) == 1, (frame, box)
    return inside[0]


class KnownKeypoints:
    """The drawn joints, mapped into the crop; people in ``unsure`` get confidence 0.2, the others 0.9."""

    def __init__(self, shown: dict[int, list[Drawn]], unsure: tuple[int, ...] = ()) -> None:
        self.shown, self.unsure = shown, unsure
        self.calls: dict[int, int] = {}  # drawn person -> crops asked about

    def __call__(self, image: np.ndarray, source: CropSource) -> ScoredPose:
        drawn = who(self.shown, source.frame, source.box)
        self.calls[drawn.person] = self.calls.get(drawn.person, 0) + 1
        top, left, rows, cols = source.window
        keypoints = np.full_like(drawn.keypoints, MISSING)
        present = visible(drawn.keypoints)
        scale = np.array([image.shape[0] / rows, image.shape[1] / cols])
        keypoints[present] = np.floor((drawn.keypoints[present] + 0.5 - [top, left]) * scale).astype(np.int64)
        inside = (keypoints >= 0).all(axis=1) & (keypoints < image.shape[:2]).all(axis=1)
        keypoints[~inside] = MISSING
        confidence = np.full(18, 0.2 if drawn.person in self.unsure else 0.9)
        return ScoredPose(keypoints, confidence)


# A starts half outside the left edge; D's joints are all "unsure"
STARTS = {0: -30, 1: 110, 2: 220, 3: 330}
OPTIONS = FromVideoOptions(min_gap=4, test_fraction=0.34, min_pose_difference=0.02)


def build(
    video: Path,
    root: Path,
    shown: dict[int, list[Drawn]],
    preset: str = "market",
    unsure: tuple[int, ...] = (3,),
    **changes,
):
    options = FromVideoOptions(**{**OPTIONS.__dict__, **changes})
    keypoints = KnownKeypoints(shown, unsure)
    result = build_from_videos(
        [video], root, preset, options, person_detector=segmenting_detector, keypoint_detector=keypoints, progress=False
    )
    result.keypoints = keypoints  # what the test's keypoint detector was asked
    return result


@pytest.fixture(scope="module")
def walk_video(tmp_path_factory: pytest.TempPathFactory, people: dict[int, list[Sprite]]):
    video = tmp_path_factory.mktemp("walk") / "walk.avi"
    return video, write_video(video, people, STARTS)


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory, walk_video):
    video, shown = walk_video
    root = tmp_path_factory.mktemp("built") / "dataset"
    return build(video, root, shown), shown, root


def person_of(shown: dict[int, list[Drawn]], crop: dict) -> int:
    return who(shown, crop["frame"], crop["box"]).person


def test_identities_are_recovered_and_pure(walk) -> None:
    result, shown, root = walk
    report = result.report
    assert report["identities"]["kept"] == 3  # A, B, C; D's poses are all unsure
    persons: dict[int, set[int]] = {}
    for crop in report["crop_list"]:
        persons.setdefault(crop["identity"], set()).add(person_of(shown, crop))
    assert all(len(found) == 1 for found in persons.values()), persons  # every identity is one drawn person
    assert sorted(next(iter(found)) for found in persons.values()) == [0, 1, 2]
    # every pair joins two crops of one drawn person, in both splits; no person is in both splits
    person_of_name = {crop["name"]: person_of(shown, crop) for crop in report["crop_list"]}
    layout = make_layout("market")
    split_people = {}
    for split in ("train", "test"):
        pairs = read_pairs(layout.pairs_path(root, split))
        assert pairs and all(person_of_name[a] == person_of_name[b] for a, b in pairs)
        split_people[split] = {person_of_name[name] for pair in pairs for name in pair}
    assert not split_people["train"] & split_people["test"]
    assert report["identities"] == {"started": 4, "kept": 3, "train": 2, "test": 1}


def test_the_layout_passes_validate(walk, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, root = walk
    assert main(["validate", str(root), "--preset", "market"]) == 0
    printed = capsys.readouterr().out
    assert "train:" in printed and "test:" in printed and "all decoded at 128x64: OK" in printed
    assert (root / "report.md").is_file() and (root / "contact_sheet.png").is_file()
    assert not [path for path in root.parent.iterdir() if path.name.startswith(".")]  # no staging left behind


def test_the_report_counts_are_right(walk) -> None:
    result, shown, root = walk
    report = json.loads((root / "report.json").read_text())
    crops, rejected = report["crops"], report["crops"]["rejected"]
    layout = make_layout("market")
    annotations = {split: read_annotations(layout.annotation_path(root, split)) for split in ("train", "test")}
    on_disk = {split: sorted(p.name for p in (root / split).iterdir()) for split in ("train", "test")}
    for split in ("train", "test"):
        assert crops[split] == len(annotations[split]) == len(on_disk[split])
        assert sorted(annotations[split]) == on_disk[split]
        assert report["pairs"][split] == len(read_pairs(layout.pairs_path(root, split)))
    assert crops["kept"] == crops["train"] + crops["test"] == len(report["crop_list"])
    # every detection is either kept or rejected for exactly one cause
    drawn = sum(len(people) for people in shown.values())
    assert crops["candidates"] == drawn
    assert crops["kept"] + sum(rejected.values()) == drawn
    # A is cut by the left edge until the box plus its margin (0.1 x 100 px + 2 px) clears it
    at_edge = sum(1 for people in shown.values() for d in people if d.box[0] - 12 < 0 or d.box[2] + 12 > FRAME_COLS)
    assert rejected["edge"] == at_edge > 0
    assert rejected["overlap"] == rejected["too_small"] == 0
    # D reaches the pose step on every frame ByteTrack follows it (it never gets a crop, so --min-gap never
    # holds it back), and each of those is rejected for its confidence
    d_detections = sum(1 for people in shown.values() for d in people if d.person == 3)
    assert rejected["low_confidence"] == result.keypoints.calls[3] >= d_detections - rejected["untracked"]
    assert not [crop for crop in report["crop_list"] if person_of(shown, crop) == 3]
    # kept crops of one identity are at least --min-gap frames apart
    frames: dict[int, list[int]] = {}
    for crop in report["crop_list"]:
        frames.setdefault(crop["identity"], []).append(crop["frame"])
    assert all(min(np.diff(sorted(f))) >= OPTIONS.min_gap for f in frames.values())
    assert rejected["min_gap"] > 0
    assert report["purity"]["started"] == {"track": 4, "position": 0, "size": 0, "appearance": 0}


def test_pairs_are_exactly_the_ones_whose_poses_differ(walk) -> None:
    result, _, root = walk
    layout = make_layout("market")
    repeated = 0
    for split in ("train", "test"):
        annotations = read_annotations(layout.annotation_path(root, split))
        pairs = set(read_pairs(layout.pairs_path(root, split)))
        for a in annotations:
            for b in annotations:
                if a == b or a.split("_")[0] != b.split("_")[0]:
                    continue
                differs = pose_difference(annotations[a], annotations[b], 128) > OPTIONS.min_pose_difference
                assert ((a, b) in pairs) == differs, (a, b)
                repeated += not differs
    assert repeated > 0  # the walk repeats its poses every 6 frames, so some same-pose pairs were left out


def test_a_split_by_time_puts_each_identitys_last_crops_in_test(walk_video, tmp_path: Path) -> None:
    video, shown = walk_video
    report = build(video, tmp_path / "dataset", shown, split="time", test_fraction=0.3).report
    by_identity: dict[int, dict[str, list[int]]] = {}
    for crop in report["crop_list"]:
        by_identity.setdefault(crop["identity"], {}).setdefault(crop["split"], []).append(crop["frame"])
    assert report["identities"]["test"] >= 1 and report["pairs"]["test"] > 0
    for splits in by_identity.values():
        if "test" in splits:
            assert max(splits["train"]) < min(splits["test"])


def test_an_identity_switch_the_tracker_misses_starts_a_new_identity(
    people: dict[int, list[Sprite]], tmp_path: Path
) -> None:
    """From frame 20 person 3 walks on in person 1's place: the same box, so ByteTrack keeps the track."""
    video = tmp_path / "swap.avi"
    shown = write_video(video, people, {1: 40, 2: 250}, swap={20: (1, 3)})
    report = build(video, tmp_path / "dataset", shown, unsure=(), test_fraction=0.5).report
    persons: dict[int, set[int]] = {}
    for crop in report["crop_list"]:
        persons.setdefault(crop["identity"], set()).add(who(shown, crop["frame"], crop["box"]).person)
    assert all(len(found) == 1 for found in persons.values()), persons
    assert sorted(p for found in persons.values() for p in found) == [1, 2, 3]
    assert report["purity"]["started"] == {"track": 2, "position": 0, "size": 0, "appearance": 1}
    # the first crop after the switch is held back as an outlier; the second like it starts the new identity
    assert report["crops"]["rejected"]["colour_outlier"] >= 1
    started_by = {entry["identity"]: entry["started_by"] for entry in report["identity_list"]}
    assert sorted(started_by.values()) == ["appearance", "track", "track"]


def test_the_splitter_cuts_a_track_that_jumps_in_position_or_size() -> None:
    splitter = IdentitySplitter(FromVideoOptions(), fps=10)
    first = splitter.observe(7, 0, np.array([100, 50, 140, 150]))
    assert splitter.observe(7, 1, np.array([104, 50, 144, 150])) == first  # a step of 4 px
    jumped = splitter.observe(7, 2, np.array([300, 50, 340, 150]))  # 200 px in a tenth of a second
    assert jumped != first
    shrunk = splitter.observe(7, 3, np.array([305, 100, 335, 160]))  # 100 px tall, then 60
    assert shrunk not in (first, jumped)
    assert splitter.splits == {"position": 1, "size": 1}
    assert splitter.observe(8, 3, np.array([0, 0, 10, 20])) not in (first, jumped, shrunk)


# --- errors ---------------------------------------------------------------------------------------------


def blank_video(path: Path, frames: int = 5) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (160, 120))
    for _ in range(frames):
        writer.write(np.full((120, 160, 3), 90, np.uint8))
    writer.release()
    return path


def test_an_unreadable_or_missing_video_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"this is not a video")
    assert main(["from-video", str(broken), "--out", str(tmp_path / "out"), "--preset", "market"]) == 2
    err = capsys.readouterr().err
    assert f"Cannot read video '{broken}'" in err and "Traceback" not in err
    assert main(["from-video", str(tmp_path / "gone.mp4"), "--out", str(tmp_path / "out"), "--preset", "market"]) == 2
    assert f"Video '{tmp_path / 'gone.mp4'}' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_video_without_people_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the command line, with the real HOG detector: an empty scene."""
    video = blank_video(tmp_path / "empty.avi")
    assert main(["from-video", str(video), "--out", str(tmp_path / "out"), "--preset", "market"]) == 2
    err = capsys.readouterr().err
    assert f"No people found in video '{video}'" in err and "5 frames searched" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_too_few_identities_for_the_split(people: dict[int, list[Sprite]], tmp_path: Path) -> None:
    video = tmp_path / "one.avi"
    shown = write_video(video, people, {1: 100})
    with pytest.raises(DataError, match=r"Too few identities in '.*one.avi' for a split by identity: 1 identity"):
        build(video, tmp_path / "dataset", shown)
    report = build(video, tmp_path / "dataset", shown, split="time", test_fraction=0.3).report
    assert report["identities"] == {"started": 1, "kept": 1, "train": 1, "test": 1}


def test_a_preset_the_crops_cannot_fill(walk_video, tmp_path: Path) -> None:
    """The people are 100 px tall: a crop window of 120 px cannot fill 256 rows with at most 1.5x upscaling."""
    video, shown = walk_video
    with pytest.raises(DataError, match=r"The 256x128 preset \(256x128\) cannot be filled from .*at least 171 px"):
        build(video, tmp_path / "dataset", shown, preset="256x128")
    report = build(video, tmp_path / "dataset", shown, preset="96x48").report  # smaller is fine
    assert report["target"]["layout"] == "market" and report["identities"]["kept"] == 3
    assert "--preset market --height 96 --width 48" in report["validate_command"]
    assert main(["validate", str(tmp_path / "dataset"), "--preset", "market", "--height", "96", "--width", "48"]) == 0


def test_an_existing_dataset_is_kept_unless_overwrite(walk_video, tmp_path: Path) -> None:
    video, shown = walk_video
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="already exists and is not empty"):
        build(video, root, shown)
    assert (root / "mine.txt").read_text() == "keep me"


def test_presets_and_options_are_checked() -> None:
    assert parse_preset("market").height == 128 and parse_preset("deepfashion").width == 176
    assert (parse_preset("160x80").height, parse_preset("160x80").layout_preset) == (160, "market")
    for bad in ("huge", "8x8", "160"):
        with pytest.raises(ValueError, match="HEIGHTxWIDTH|at least 16 px"):
            parse_preset(bad)
    for field, value in (("every", 0), ("split", "random"), ("test_fraction", 1.0), ("max_upscale", 0.5)):
        with pytest.raises(ConfigError, match="--" + field.replace("_", "-")):
            parse(FromVideoOptions, {field: value}, FLAGS)


def test_the_command_line_builds_and_summarises(
    walk_video, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI with the detectors swapped for the test's (the defaults are HOG and MediaPipe)."""
    import emca.data.video.build as video_module  # where build_from_videos looks the default detectors up

    video, shown = walk_video
    monkeypatch.setattr(video_module, "hog_people_detector", lambda: segmenting_detector)
    monkeypatch.setattr(video_module, "MediaPipeKeypoints", lambda confidence: KnownKeypoints(shown, unsure=(3,)))
    out = tmp_path / "dataset"
    argv = [
        "from-video",
        str(video),
        "--out",
        str(out),
        "--preset",
        "market",
        "--min-gap",
        "4",
        "--test-fraction",
        "0.34",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 identities (2 train, 1 test)" in printed and f"validate {out} --preset market" in printed
    assert main(argv) == 2  # out is not empty now
    assert main([*argv, "--overwrite"]) == 0


# --- the real detectors ----------------------------------------------------------------------------------


def test_the_hog_detector_finds_a_drawn_person() -> None:
    """OpenCV's HOG people detector on synthetic people 160 px tall (it misses some poses of cartoon people)."""
    detector = hog_people_detector(win_stride=4)
    found = 0
    for image, keypoints in render_identity(0, 1, 6, 160, 80, background="plain"):
        frame = np.full((240, 320, 3), 128, np.uint8)
        frame[40:200, 120:200] = image
        joints = keypoints[visible(keypoints)] + [40, 120]
        truth = np.array([[joints[:, 1].min(), joints[:, 0].min(), joints[:, 1].max(), joints[:, 0].max()]], float)
        detected = detector(frame)
        assert detected.boxes.shape[1] == 4 and ((detected.scores > 0) & (detected.scores < 1)).all()
        if len(detected.boxes):
            found += box_iou(np.concatenate([truth, detected.boxes]))[0, 1:].max() > 0.3
    assert found >= 3


def test_mediapipe_keypoints_on_a_real_photo() -> None:
    """The real MediaPipe path (emca.pose's PoseExtractor) on skimage's astronaut, as a crop would reach it."""
    pytest.importorskip("mediapipe")
    from skimage.data import astronaut

    from emca.data.keypoints import JOINT_NAMES

    detector = MediaPipeKeypoints(0.5)
    try:
        source = CropSource(Path("photo"), 0, (0.0, 0.0, 512.0, 512.0), (0, 0, 512, 512))
        pose = detector(astronaut(), source)
    finally:
        detector.close()
    assert pose.keypoints.shape == (18, 2) and pose.confidence.shape == (18,)
    for name, place in {"right_shoulder": (250, 105), "left_shoulder": (250, 315), "nose": (120, 222)}.items():
        joint = JOINT_NAMES.index(name)
        assert np.hypot(*(pose.keypoints[joint] - place)) < 0.1 * 512, name
        assert pose.confidence[joint] > 0.5
