"""PATN file format, Gaussian pose maps and horizontal flip, checked against independent computations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _fake_data import make_dataset

from emca.data.annotations import read_annotations, read_pairs
from emca.data.datamodule import PoseTransferDataOptions
from emca.data.dataset import PoseTransferDataset, make_layout
from emca.data.keypoints import JOINT_NAMES, flip_keypoints, pose_heatmaps
from emca.errors import ConfigError
from emca.options import parse

# the shape of real lines: a space after each ':', y (row) list first, -1 for missing joints
SAMPLE_ANNOTATION = (
    "name:keypoints_y:keypoints_x\n"
    "fashionWOMENDressesid0000262902_3back.jpg: [-1, 41, 42, 77, -1, 40, 76, 111, 119, 174, 228, 119, 174, "
    "228, -1, -1, -1, 27]: [-1, 87, 62, 56, -1, 112, 120, 121, 69, 69, 70, 103, 104, 105, -1, -1, -1, 94]\n"
    "fashionMENDenimid0000008001_1front.jpg: [25, 52, 52, 93, 130, 52, 93, 129, 135, 190, 239, 134, 190, "
    "240, 20, 20, 25, 25]: [88, 88, 60, 55, 50, 115, 121, 126, 70, 72, 72, 105, 104, 103, 82, 94, 73, 103]\n"
)
SAMPLE_PAIRS = "from,to\nfashionWOMENDressesid0000262902_3back.jpg,fashionMENDenimid0000008001_1front.jpg\n"


def test_real_format_lines_parse_with_rows_first(tmp_path: Path) -> None:
    path = tmp_path / "fasion-resize-annotation-test.csv"
    path.write_text(SAMPLE_ANNOTATION)
    annotations = read_annotations(path)
    back = annotations["fashionWOMENDressesid0000262902_3back.jpg"]
    assert back.shape == (18, 2) and back.dtype == np.int64
    assert back[1].tolist() == [41, 87]  # neck: row 41, col 87
    assert back[0].tolist() == [-1, -1]
    assert back[17].tolist() == [27, 94]
    front = annotations["fashionMENDenimid0000008001_1front.jpg"]
    assert front[:, 0].tolist()[:3] == [25, 52, 52]
    pairs_path = tmp_path / "fasion-resize-pairs-test.csv"
    pairs_path.write_text(SAMPLE_PAIRS)
    assert read_pairs(pairs_path) == [
        ("fashionWOMENDressesid0000262902_3back.jpg", "fashionMENDenimid0000008001_1front.jpg")
    ]


def test_preset_file_names() -> None:
    deepfashion = make_layout("deepfashion")
    assert (deepfashion.height, deepfashion.width) == (256, 176)
    assert deepfashion.annotation_path("/d", "train") == Path("/d/fasion-resize-annotation-train.csv")
    assert deepfashion.pairs_path("/d", "test") == Path("/d/fasion-resize-pairs-test.csv")
    assert deepfashion.image_dir_path("/d", "test") == Path("/d/test")
    market = make_layout("market")
    assert (market.height, market.width) == (128, 64)
    assert market.annotation_path("/m", "test") == Path("/m/market-annotation-test.csv")
    custom = make_layout("market", image_dir="images/{split}", pairs_file="my-{split}.csv")
    assert custom.image_dir_path("/m", "train") == Path("/m/images/train")
    assert custom.pairs_path("/m", "train") == Path("/m/my-train.csv")


def test_layout_errors_name_the_field() -> None:
    """The data schema, where a command starts, names the field; make_layout below it only says what is missing."""
    with pytest.raises(ConfigError, match="data.height"):
        parse(PoseTransferDataOptions, {"root": "r", "preset": "synthetic", "width": 32}, "data")
    with pytest.raises(ConfigError, match=r"data.preset' is 'celeb'; expected one of"):
        parse(PoseTransferDataOptions, {"root": "r", "preset": "celeb"}, "data")
    with pytest.raises(ConfigError, match="data.width"):
        parse(PoseTransferDataOptions, {"root": "r", "preset": "synthetic", "height": 32, "width": 0}, "data")
    with pytest.raises(ValueError, match="'synthetic' preset has no fixed image size; give the height"):
        make_layout("synthetic", width=32)


def test_heatmaps_match_per_pixel_formula() -> None:
    height, width, sigma = 12, 9, 2.5
    keypoints = np.full((18, 2), -1, dtype=np.int64)
    keypoints[0] = (3, 4)
    keypoints[5] = (11, 0)
    keypoints[9] = (0, 8)
    maps = pose_heatmaps(keypoints, height, width, sigma).numpy()
    expected = np.zeros((18, height, width))
    for joint, (row, col) in enumerate(keypoints):
        if row == -1:
            continue
        for y in range(height):
            for x in range(width):
                expected[joint, y, x] = math.exp(-((y - row) ** 2 + (x - col) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)
    assert maps[0, 3, 4] == pytest.approx(1.0)
    assert not maps[1].any()


def test_flip_swaps_left_and_right_and_mirrors_columns() -> None:
    width = 20
    keypoints = np.stack([np.arange(18), np.arange(18)], axis=1).astype(np.int64)  # joint j at (j, j)
    keypoints[16] = -1
    flipped = flip_keypoints(keypoints, width)
    index = {name: j for j, name in enumerate(JOINT_NAMES)}
    for name in JOINT_NAMES:
        mirror = name.replace("left", "@").replace("right", "left").replace("@", "right")
        original = keypoints[index[mirror]]
        expected = [-1, -1] if original[0] == -1 else [original[0], width - 1 - original[1]]
        assert flipped[index[name]].tolist() == expected, name
    np.testing.assert_array_equal(flip_keypoints(flipped, width), keypoints)


def test_flipped_item_is_consistent(tmp_path: Path) -> None:
    layout = make_dataset(tmp_path, height=24, width=14)
    plain = PoseTransferDataset(tmp_path, layout, "train", sigma=3.0)[1]
    flipped = PoseTransferDataset(tmp_path, layout, "train", sigma=3.0, flip_probability=1.0)[1]
    for side in ("source", "target"):
        torch.testing.assert_close(flipped[f"{side}_image"], plain[f"{side}_image"].flip(-1))
        expected_keypoints = flip_keypoints(plain[f"{side}_keypoints"].numpy(), layout.width)
        np.testing.assert_array_equal(flipped[f"{side}_keypoints"].numpy(), expected_keypoints)
        # joint j of the mirrored maps is the mirror image of its left/right partner's map
        for joint, name in enumerate(JOINT_NAMES):
            mirror = name.replace("left", "@").replace("right", "left").replace("@", "right")
            partner = JOINT_NAMES.index(mirror)
            torch.testing.assert_close(flipped[f"{side}_pose"][joint], plain[f"{side}_pose"][partner].flip(-1))
