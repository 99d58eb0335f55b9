"""Bad inputs to python -m emca.infer end with one message naming the file, line or field, never a traceback."""

# the fixtures shared with test_infer are imported, and pytest passes them in as arguments of the same name
# ruff: noqa: F811

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_infer import PHOTO_SIZE, checkpoint, photos, run_cli, xy_json  # noqa: F401 (checkpoint, photos: fixtures)

from emca.data.annotations import write_annotations, write_pairs
from emca.data.keypoints import JOINT_NAMES
from emca.infer import read_pose_json

WRIST = JOINT_NAMES.index("right_wrist")


def refusal(args: list[str], capsys: pytest.CaptureFixture, cwd: Path | None = None) -> str:
    """The message of ``python -m emca.infer ARGS``, run in a fresh interpreter when ``cwd`` is given.

    The command must exit with status 2 after printing one ``error: ...`` paragraph and no traceback.
    """
    if cwd is None:
        message = run_cli(args, capsys)
    else:
        result = subprocess.run(
            [sys.executable, "-m", "emca.infer", *args], cwd=cwd, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 2, result.stderr
        message = result.stderr
    assert "Traceback" not in message
    assert message.strip().startswith("error: ") and "\n" not in message.strip(), message
    return message


@pytest.fixture(scope="module")
def source(photos, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The source photo and its pose JSON."""
    folder, annotations = photos
    pose = xy_json(tmp_path_factory.mktemp("source") / "source.json", annotations["p0.png"], PHOTO_SIZE)
    return folder / "p0.png", pose


def single_args(checkpoint: Path, source: tuple[Path, Path], target: Path, out: Path) -> list[str]:
    return [f"ckpt={checkpoint}", f"source={source[0]}", f"source_pose={source[1]}", f"target={target}", f"out={out}"]


def target_points(photos) -> list[list[float] | None]:
    """The [x, y] list of the target photo's keypoints, null for missing joints."""
    return [[float(c), float(r)] if r >= 0 else None for r, c in photos[1]["p1.png"]]


def openpose_values(photos) -> list[float]:
    """The target's keypoints as an OpenPose pose_keypoints_2d list (x, y, confidence)."""
    return [v for point in target_points(photos) for v in ((*point, 0.9) if point else (0.0, 0.0, 0.0))]


def replaced(items: list, index: int, value: object) -> list:
    """A copy of ``items`` with ``items[index]`` set to ``value``."""
    changed = list(items)
    changed[index] = value
    return changed


NON_FINITE = {
    "nan": (
        lambda p: {"keypoints": replaced(target_points(p), WRIST, [math.nan, 10.0])},
        ["joint 4", "right_wrist", "finite"],
    ),
    "inf": (
        lambda p: {"keypoints": replaced(target_points(p), WRIST, [math.inf, 10.0])},
        ["joint 4", "right_wrist", "finite"],
    ),
    "huge": (
        lambda p: {"keypoints": replaced(target_points(p), WRIST, [1e300, 10.0]), "height": 96, "width": 64},
        ["joint 4", "right_wrist", "x=1e+300", "outside the 96x64"],
    ),
    "openpose_nan": (
        lambda p: {"people": [{"pose_keypoints_2d": replaced(openpose_values(p), 3 * WRIST, math.nan)}]},
        ["pose_keypoints_2d[12]", "x of joint 4", "finite"],
    ),
    "openpose_huge": (
        lambda p: {"people": [{"pose_keypoints_2d": replaced(openpose_values(p), 3 * WRIST + 1, 1e300)}]},
        ["pose_keypoints_2d[13]", "y of joint 4", "finite"],
    ),
}


@pytest.mark.parametrize("case", sorted(NON_FINITE))
def test_non_finite_or_huge_coordinates_are_named(
    case: str,
    tmp_path: Path,
    checkpoint: Path,
    photos,
    source,
    capsys,
) -> None:
    content, expected = NON_FINITE[case]
    target = tmp_path / "target.json"
    target.write_text(json.dumps(content(photos)))  # json writes NaN, Infinity and 1e+300 as Python reads them
    message = refusal(single_args(checkpoint, source, target, tmp_path / "r.png"), capsys)
    assert str(target) in message
    for fragment in expected:
        assert fragment in message
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize(
    ("size", "field"),
    [
        ({"height": "96", "width": 64}, "height"),
        ({"height": 96, "width": 0}, "width"),
        ({"height": -96, "width": 64}, "height"),
        ({"height": 96}, "width"),
    ],
)
def test_bad_frame_size_is_named(
    size: dict,
    field: str,
    tmp_path: Path,
    checkpoint: Path,
    photos,
    source,
    capsys,
) -> None:
    target = tmp_path / "target.json"
    target.write_text(json.dumps({"keypoints": target_points(photos), **size}))
    message = refusal(single_args(checkpoint, source, target, tmp_path / "r.png"), capsys)
    assert str(target) in message and f"'{field}'" in message
    assert "missing" not in message  # not the joints check, which a bad frame used to reach


def test_valid_variants_read_alike(tmp_path: Path, photos) -> None:
    """A byte-order mark and sizes written as 96.0 are valid, and read as the plain file is."""
    plain = read_pose_json(xy_json(tmp_path / "plain.json", photos[1]["p1.png"], PHOTO_SIZE), (32, 16))
    variant = tmp_path / "variant.json"
    text = json.dumps({"keypoints": target_points(photos), "height": 96.0, "width": 64.0})
    variant.write_bytes(b"\xef\xbb\xbf" + text.encode())
    read = read_pose_json(variant, (32, 16))
    np.testing.assert_array_equal(read.keypoints, plain.keypoints)
    assert read.size == plain.size == PHOTO_SIZE


def test_source_pose_in_another_frame_is_refused(
    tmp_path: Path,
    checkpoint: Path,
    photos,
    source,
    capsys,
) -> None:
    halved = xy_json(tmp_path / "halved.json", photos[1]["p0.png"] // 2, (48, 32))
    message = refusal(single_args(checkpoint, (source[0], halved), source[1], tmp_path / "r.png"), capsys)
    assert str(halved) in message and "48x32" in message and "96x64" in message


@pytest.mark.parametrize("case", ["pose_not_utf8", "pose_malformed", "annotations_not_utf8", "pairs_not_utf8"])
def test_unreadable_text_is_named(
    case: str,
    tmp_path: Path,
    checkpoint: Path,
    photos,
    source,
    capsys,
) -> None:
    folder, annotations = photos
    annotation_csv, pairs_csv = tmp_path / "annotations.csv", tmp_path / "pairs.csv"
    write_annotations(annotation_csv, annotations)
    write_pairs(pairs_csv, [("p0.png", "p1.png")])
    target = tmp_path / "target.json"
    target.write_text(json.dumps({"keypoints": target_points(photos)}))
    if case == "pose_not_utf8":
        target.write_bytes(b'{\n"note": "caf\xe9",\n' + target.read_bytes()[1:])  # Latin-1, as old editors save
        bad, expected = target, ["line 2", "UTF-8 JSON"]
    elif case == "pose_malformed":
        target.write_text('{"keypoints": [\n[1, 2],\n[3 4]]}')
        bad, expected = target, ["line 3, column 4", "not valid JSON"]
    elif case == "annotations_not_utf8":
        annotation_csv.write_bytes(annotation_csv.read_bytes() + b"caf\xe9.png: [1]: [1]\n")
        bad, expected = annotation_csv, ["line 4", "UTF-8"]
    else:
        pairs_csv.write_bytes(pairs_csv.read_bytes() + b"caf\xe9.png,p0.png\n")
        bad, expected = pairs_csv, ["line 3", "UTF-8"]
    if case.startswith("pose"):
        args = single_args(checkpoint, source, target, tmp_path / "r.png")
    else:
        args = [f"ckpt={checkpoint}", f"pairs={pairs_csv}", f"images={folder}", f"annotations={annotation_csv}"]
        args.append(f"out={tmp_path / 'results'}")
    message = refusal(args, capsys)
    assert str(bad) in message
    for fragment in expected:
        assert fragment in message


@pytest.mark.parametrize(
    ("field", "value", "in_subprocess"),
    [("out", "result.xyz", True), ("out", "result", False), ("sheet", "sheet.gif", False)],
)
def test_output_without_image_suffix_is_refused_before_loading(
    field: str, value: str, in_subprocess: bool, tmp_path: Path, capsys
) -> None:
    """The checkpoint does not exist: the output name must be refused before the model is looked for."""
    names = {"out": "result.png", field: value}
    args = ["ckpt=missing.ckpt", "source=a.png", "target=b.json", *(f"{key}={name}" for key, name in names.items())]
    message = refusal(args, capsys, cwd=tmp_path if in_subprocess else None)
    assert f"{field}={value}" in message and ".png" in message and ".jpg" in message
    assert "missing.ckpt" not in message


@pytest.mark.parametrize(("pairs", "line"), [(("p0.png", "gone.png"), 3), (("gone.png", "p1.png"), 2)])
def test_missing_batch_image_is_named_before_any_result(
    pairs: tuple[str, str],
    line: int,
    tmp_path: Path,
    checkpoint: Path,
    photos,
    capsys,
) -> None:
    folder, annotations = photos
    write_annotations(tmp_path / "annotations.csv", {**annotations, "gone.png": annotations["p1.png"]})
    pair_rows = [pairs] if line == 2 else [("p1.png", "p0.png"), pairs]
    write_pairs(tmp_path / "pairs.csv", pair_rows)
    args = [
        f"ckpt={checkpoint}",
        f"pairs={tmp_path / 'pairs.csv'}",
        f"images={folder}",
        f"annotations={tmp_path / 'annotations.csv'}",
        f"out={tmp_path / 'results'}",
    ]
    message = refusal(args, capsys)
    assert "'gone.png'" in message and f"pairs.csv, line {line}" in message and str(folder) in message
    assert not (tmp_path / "results").exists()  # not even the valid pair before it was generated


@pytest.mark.parametrize(("role", "hint"), [("source", "source_pose=POSE.json"), ("target", "target=POSE.json")])
def test_no_person_found_suggests_giving_keypoints(
    role: str,
    hint: str,
    tmp_path: Path,
    checkpoint: Path,
    source,
    capsys,
) -> None:
    pytest.importorskip("mediapipe")
    grey = tmp_path / "grey.png"
    Image.new("RGB", (64, 96), (128, 128, 128)).save(grey)
    if role == "source":
        args = [f"ckpt={checkpoint}", f"source={grey}", f"target={source[1]}", f"out={tmp_path / 'r.png'}"]
    else:
        args = single_args(checkpoint, source, grey, tmp_path / "r.png")
    message = refusal(args, capsys)
    assert str(grey) in message and "no person" in message and hint in message
