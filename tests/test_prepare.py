"""Converting raw DeepFashion (256x256) and Market-1501 releases into the training layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _fake_data import random_image
from PIL import Image

from emca.data.annotations import read_annotations, read_pairs, write_annotations, write_pairs
from emca.data.dataset import PoseTransferDataset, make_layout
from emca.data.deepfashion_frame import crop_keypoints
from emca.data.prepare import EXPECTED_PAIRS, prepare_deepfashion, prepare_market
from emca.errors import DataError


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


DEEPFASHION_NAMES = ("fashionMENDenimid0000008001_1front.png", "fashionMENDenimid0000008001_2side.png")


def write_raw_release(raw: Path, preset: str, height: int, width: int, keypoints: np.ndarray) -> None:
    """Two images per split, both annotated with ``keypoints``, paired both ways."""
    layout = make_layout(preset)
    rng = np.random.default_rng(3)
    for split in ("train", "test"):
        (raw / split).mkdir(parents=True)
        names = DEEPFASHION_NAMES if preset == "deepfashion" else ("0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg")
        for name in names:
            random_image(rng, height, width).save(raw / split / name)
        write_annotations(layout.annotation_path(raw, split), {name: keypoints for name in names})
        write_pairs(layout.pairs_path(raw, split), [(names[0], names[1]), (names[1], names[0])])


def raw_deepfashion_keypoints() -> np.ndarray:
    keypoints = np.full((18, 2), -1, dtype=np.int64)
    keypoints[1] = (30, 128)  # neck, mid image -> col 88
    keypoints[2] = (50, 40)  # right shoulder on the crop's first column -> col 0
    keypoints[5] = (50, 215)  # left shoulder on the crop's last column -> col 175
    keypoints[8] = (120, 39)  # right hip, one pixel left of the crop -> missing
    keypoints[11] = (120, 216)  # left hip, one pixel right of the crop -> missing
    return keypoints


def test_deepfashion_crop_and_keypoint_shift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_raw_release(raw, "deepfashion", 256, 256, raw_deepfashion_keypoints())
    counts = prepare_deepfashion(raw, out, progress=False)
    assert counts == {"train": 2, "test": 2}
    for split in ("train", "test"):
        for name in DEEPFASHION_NAMES:
            before = np.asarray(pixels(raw / split / name))
            after = np.asarray(pixels(out / split / name))
            assert after.shape == (256, 176, 3)
            np.testing.assert_array_equal(after, before[:, 40:216])
    keypoints = read_annotations(out / "fasion-resize-annotation-test.csv")[DEEPFASHION_NAMES[0]]
    assert keypoints[1].tolist() == [30, 88]
    assert keypoints[2].tolist() == [50, 0]
    assert keypoints[5].tolist() == [50, 175]
    assert keypoints[8].tolist() == [-1, -1] and keypoints[11].tolist() == [-1, -1]
    assert keypoints[0].tolist() == [-1, -1]
    assert read_pairs(out / "fasion-resize-pairs-train.csv") == read_pairs(raw / "fasion-resize-pairs-train.csv")
    printed = capsys.readouterr().out
    assert "WARNING: deepfashion train: 2 pairs, but the published split has 101,966" in printed
    assert "WARNING: deepfashion test: 2 pairs, but the published split has 8,570" in printed
    assert "4 of 10 joints fell outside the crop" in printed
    assert len(PoseTransferDataset(out, make_layout("deepfashion"), "train")) == 2
    assert not list(out.rglob("*.tmp")), "atomic writes leave no temporary files"


@pytest.mark.parametrize("frame", ["auto", "256x176"])
def test_deepfashion_keypoints_already_cropped(frame: str, tmp_path: Path, capsys) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    keypoints = np.full((18, 2), -1, dtype=np.int64)
    keypoints[1] = (30, 10)
    keypoints[5] = (50, 175)  # the crop's last column: still inside the 256x176 frame
    write_raw_release(raw, "deepfashion", 256, 256, keypoints)
    prepare_deepfashion(raw, out, frame, progress=False)
    converted = read_annotations(out / "fasion-resize-annotation-train.csv")[DEEPFASHION_NAMES[1]]
    np.testing.assert_array_equal(converted, keypoints)
    expected = (
        "no joint of the 2 annotated images lies beyond x = 175"
        if frame == "auto"
        else "as stated with --keypoints-frame"
    )
    assert f"the 256x176 frame ({expected}); kept as they are" in capsys.readouterr().out


def test_deepfashion_keypoints_beyond_the_crop_mean_the_full_frame(tmp_path: Path, capsys) -> None:
    keypoints = raw_deepfashion_keypoints()  # x = 215 and 216: beyond the crop's last column
    write_raw_release(tmp_path / "raw", "deepfashion", 256, 256, keypoints)
    prepare_deepfashion(tmp_path / "raw", tmp_path / "out", progress=False)
    assert "the 256x256 frame ('fashionMENDenimid0000008001_1front.png' has a joint at x = 215" in (
        capsys.readouterr().out
    )


def test_crop_keypoints_keeps_missing_joints() -> None:
    keypoints = np.full((18, 2), -1, dtype=np.int64)
    keypoints[3] = (7, 100)
    cropped = crop_keypoints(keypoints)
    assert cropped[3].tolist() == [7, 60]
    assert (np.delete(cropped, 3, axis=0) == -1).all()


def test_deepfashion_wrong_raw_size(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_raw_release(raw, "deepfashion", 200, 150, raw_deepfashion_keypoints())
    with pytest.raises(DataError, match=r"Raw image '.*fashionMENDenimid0000008001_1front.png' is 200x150 .*256x256"):
        prepare_deepfashion(raw, tmp_path / "out", progress=False)


def test_market_copies_files_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(EXPECTED_PAIRS, "market", {"train": 2, "test": 5})
    raw, out = tmp_path / "raw", tmp_path / "out"
    keypoints = np.zeros((18, 2), dtype=np.int64)
    keypoints[:, 0] = np.arange(18) * 7  # rows up to 119 < 128
    write_raw_release(raw, "market", 128, 64, keypoints)
    assert prepare_market(raw, out, progress=False) == {"train": 2, "test": 2}
    for path in (raw / "test").iterdir():
        assert (out / "test" / path.name).read_bytes() == path.read_bytes()
    assert (out / "market-annotation-train.csv").read_text() == (raw / "market-annotation-train.csv").read_text()
    printed = capsys.readouterr().out
    assert "market train: 2 pairs, as in the published split." in printed
    assert "WARNING: market test: 2 pairs, but the published split has 5" in printed


def test_market_wrong_size_and_missing_folder(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_raw_release(raw, "market", 128, 48, np.zeros((18, 2), dtype=np.int64))
    with pytest.raises(DataError, match=r"0002_c1s1_000451_03.jpg' is 128x48 \(HxW\); expected 128x64"):
        prepare_market(raw, tmp_path / "out", progress=False)
    with pytest.raises(DataError, match=r"Raw folder '.*nowhere' does not exist"):
        prepare_market(tmp_path / "nowhere", tmp_path / "out2", progress=False)


def test_an_already_converted_folder_is_checked_and_used_as_it_is(tmp_path: Path, capsys) -> None:
    raw = tmp_path / "raw"
    keypoints = np.full((18, 2), -1, dtype=np.int64)
    keypoints[1] = (30, 88)
    write_raw_release(raw, "deepfashion", 256, 176, keypoints)
    before = {path: path.read_bytes() for path in raw.rglob("*") if path.is_file()}
    assert prepare_deepfashion(raw, tmp_path / "out", progress=False) == {"train": 2, "test": 2}
    printed = capsys.readouterr().out
    assert "is already in emca's layout at 256x176 and checks out (2 train and 2 test pairs)" in printed
    assert f"nothing was written to '{tmp_path / 'out'}'. Train on it with data.root={raw}." in printed
    assert not (tmp_path / "out").exists()
    assert {path: path.read_bytes() for path in raw.rglob("*") if path.is_file()} == before
    with pytest.raises(DataError, match="is already in emca's layout at 256x176; it cannot give 512x352"):
        prepare_deepfashion(raw, tmp_path / "out", size="512x352", progress=False)
    # checked, not trusted: a joint outside the 256x176 image is named
    keypoints[5] = (50, 200)
    write_annotations(raw / "fasion-resize-annotation-train.csv", {name: keypoints for name in DEEPFASHION_NAMES})
    with pytest.raises(DataError, match="fasion-resize-annotation-train.csv"):
        prepare_deepfashion(raw, tmp_path / "out", progress=False)


def test_dptn_spelling_is_named_as_a_near_miss(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_raw_release(raw, "deepfashion", 256, 256, raw_deepfashion_keypoints())
    (raw / "fasion-resize-annotation-train.csv").rename(raw / "fashion-resize-annotation-train.csv")
    with pytest.raises(DataError) as error:
        prepare_deepfashion(raw, tmp_path / "out", progress=False)
    message = str(error.value)
    assert (
        "As the PATN / XingGAN release it lacks: fasion-resize-annotation-train.csv (it holds "
        "'fashion-resize-annotation-train.csv', a near miss"
    ) in message
    assert not (tmp_path / "out").exists()
