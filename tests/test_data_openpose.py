"""Reading OpenPose JSON (COCO-18 and BODY_25) into PATN keypoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emca.data.annotations import read_annotations
from emca.data.openpose import openpose_dir_to_annotations, read_openpose_json
from emca.errors import DataError


def write_json(path: Path, people: list[list[float]]) -> Path:
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": p} for p in people]}))
    return path


def coco_person(offset: float = 0.0, scale: float = 1.0) -> list[float]:
    """Joint j at x = 10 + 2j, y = 100 + 3j (scaled about the origin), confidence 0.9."""
    values = []
    for joint in range(18):
        values += [(10 + 2 * joint) * scale + offset, (100 + 3 * joint) * scale + offset, 0.9]
    return values


def test_coco18_rows_first_and_weak_joints_missing(tmp_path: Path) -> None:
    values = coco_person()
    values[3 * 4 + 2] = 0.05  # right wrist below the 0.1 threshold
    values[3 * 7 : 3 * 8] = [0.0, 0.0, 0.0]  # left wrist not detected
    values[3 * 9] = 18.4  # right knee x rounds to 18
    keypoints = read_openpose_json(write_json(tmp_path / "a_keypoints.json", [values]))
    assert keypoints.shape == (18, 2) and keypoints.dtype == np.int64
    assert keypoints[0].tolist() == [100, 10]
    assert keypoints[9].tolist() == [127, 18]
    assert keypoints[4].tolist() == [-1, -1] and keypoints[7].tolist() == [-1, -1]
    assert read_openpose_json(tmp_path / "a_keypoints.json", confidence_threshold=0.01)[4].tolist() == [112, 18]


def test_body25_maps_to_coco18_by_joint_name(tmp_path: Path) -> None:
    # BODY_25 order from the OpenPose output documentation
    body25 = [
        "Nose",
        "Neck",
        "RShoulder",
        "RElbow",
        "RWrist",
        "LShoulder",
        "LElbow",
        "LWrist",
        "MidHip",
        "RHip",
        "RKnee",
        "RAnkle",
        "LHip",
        "LKnee",
        "LAnkle",
        "REye",
        "LEye",
        "REar",
        "LEar",
        "LBigToe",
        "LSmallToe",
        "LHeel",
        "RBigToe",
        "RSmallToe",
        "RHeel",
    ]
    coco18 = [
        "Nose",
        "Neck",
        "RShoulder",
        "RElbow",
        "RWrist",
        "LShoulder",
        "LElbow",
        "LWrist",
        "RHip",
        "RKnee",
        "RAnkle",
        "LHip",
        "LKnee",
        "LAnkle",
        "REye",
        "LEye",
        "REar",
        "LEar",
    ]
    values = []
    for index in range(25):
        values += [float(index), float(100 + index), 1.0]
    keypoints = read_openpose_json(write_json(tmp_path / "b.json", [values]))
    for coco_index, name in enumerate(coco18):
        assert keypoints[coco_index, 1] == body25.index(name), name


def test_several_people(tmp_path: Path) -> None:
    path = write_json(tmp_path / "crowd.json", [coco_person(), coco_person(offset=5, scale=2.0), coco_person()])
    largest = read_openpose_json(path)
    assert largest[0].tolist() == [205, 25]
    with pytest.raises(DataError, match=r"crowd.json: 3 people detected"):
        read_openpose_json(path, multiple_people="error")


def test_malformed_json(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mpi.json, people\[0\].pose_keypoints_2d: expected 54 values .* got 45"):
        read_openpose_json(write_json(tmp_path / "mpi.json", [[1.0] * 45]))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="Cannot read OpenPose JSON '.*broken.json'"):
        read_openpose_json(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="other.json: expected an OpenPose JSON object with a 'people' list"):
        read_openpose_json(tmp_path / "other.json")


def test_directory_conversion(tmp_path: Path) -> None:
    json_dir = tmp_path / "json"
    json_dir.mkdir()
    write_json(json_dir / "anna_01_keypoints.json", [coco_person()])
    write_json(json_dir / "anna_02_keypoints.json", [coco_person(offset=1)])
    write_json(json_dir / "empty_keypoints.json", [])
    annotations, skipped = openpose_dir_to_annotations(json_dir, tmp_path / "ann.csv", image_extension=".png")
    assert skipped == ["empty_keypoints.json"]
    written = read_annotations(tmp_path / "ann.csv")
    assert sorted(written) == ["anna_01.png", "anna_02.png"]
    np.testing.assert_array_equal(written["anna_02.png"], annotations["anna_02.png"])
    assert written["anna_02.png"][0].tolist() == [101, 11]
    with pytest.raises(DataError, match="No OpenPose"):
        openpose_dir_to_annotations(tmp_path / "nothing", tmp_path / "x.csv")
