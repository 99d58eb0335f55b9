"""The GFLA / NTED / PIDM release of DeepFashion (img_highres trees under img/, train_pairs.txt, train.lst, per-image
pose/*.txt in the 256x256 frame) into emca's layout at 256x176 and 512x352, from a small fake release laid out as
the real one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _fake_data import random_image
from PIL import Image

from emca.data.annotations import read_annotations, read_pairs
from emca.data.deepfashion_highres import flattened_name
from emca.data.prepare import prepare_deepfashion
from emca.errors import DataError

HIGHRES = (330, 225)  # (H, W): the aspect of the release's 1101x750 images, small for the test
TREE = {
    "train": ["MEN/Denim/id_00000080/01_1_front.jpg", "MEN/Denim/id_00000080/01_2_side.jpg",
              "MEN/Denim/id_00000080/01_4_full.jpg"],
    "test": ["WOMEN/Dresses/id_00000002/02_1_front.jpg", "WOMEN/Dresses/id_00000002/02_3_back.jpg"],
}  # fmt: skip


def pose_lines(index: int) -> np.ndarray:
    """(18, 2) ``x y`` in the 256x256 frame: x from 40 (the crop's first column) up to 215 (its last), one joint
    at x = 20 (in the white margin: cut off by the crop), one missing, one fractional."""
    values = np.stack([np.linspace(40, 215, 18).round() + 0.0, np.arange(18) * 13.0 + 5 + index], axis=1)
    values[3] = (20, 60)
    values[7] = (-1, -1)
    values[9] = (100.4, 99.6)
    return values


def expected_256x176(values: np.ndarray) -> np.ndarray:
    """Independently: (row, col) = (y, x - 40), rounded; -1 -1 for the missing joint and the one cut off."""
    expected = np.stack([np.round(values[:, 1]), np.round(values[:, 0]) - 40], axis=1).astype(np.int64)
    expected[[3, 7]] = -1
    return expected


def write_release(raw: Path, lst_as_paths: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    poses = {}
    for split, paths in TREE.items():
        for index, relative in enumerate(paths):
            image = raw / "img" / relative
            image.parent.mkdir(parents=True, exist_ok=True)
            random_image(rng, *HIGHRES).save(image, quality=98)
            pose = (raw / "pose" / relative).with_suffix(".txt")
            pose.parent.mkdir(parents=True, exist_ok=True)
            values = pose_lines(index)
            np.savetxt(pose, values, fmt="%g")
            poses[flattened_name(Path(relative))] = values
        entries = [f"img/{relative}" if lst_as_paths else flattened_name(Path(relative)) for relative in paths]
        (raw / f"{split}.lst").write_text("".join(f"{entry}\n" for entry in entries))
        # a line is target,source[,source ...]
        first, second = f"img/{paths[0]}", f"img/{paths[1]}"
        (raw / f"{split}_pairs.txt").write_text(f"{second},{first}\n{first},{second}\n")
    return poses


@pytest.mark.parametrize("lst_as_paths", [True, False])
def test_both_sizes_from_the_pose_files_in_the_256x256_frame(tmp_path: Path, lst_as_paths: bool, capsys) -> None:
    raw = tmp_path / "raw"
    poses = write_release(raw, lst_as_paths)
    for size, factor in (("256x176", 1), ("512x352", 2)):
        out = tmp_path / size
        assert prepare_deepfashion(raw, out, size=size, progress=False) == {"train": 2, "test": 2}
        for split, paths in TREE.items():
            names = [flattened_name(Path(relative)) for relative in paths]
            # the whole list is written (the FID reference set), not only the paired images
            assert sorted(path.name for path in (out / split).iterdir()) == sorted(names)
            with Image.open(out / split / names[0]) as image:
                assert image.size == (176 * factor, 256 * factor)
            # the second entry of a line is the source, the first the target
            assert read_pairs(out / f"fasion-resize-pairs-{split}.csv") == [(names[0], names[1]), (names[1], names[0])]
            annotations = read_annotations(out / f"fasion-resize-annotation-{split}.csv")
            for name in names:
                expected = expected_256x176(poses[name])
                expected[expected >= 0] *= factor
                np.testing.assert_array_equal(annotations[name], expected)
    printed = capsys.readouterr().out
    assert "deepfashion: the GFLA / NTED / PIDM release" in printed
    assert "the 256x256 frame (" in printed and "beyond the 256x176 crop's last column (175)" in printed


def test_the_frame_stated_as_256x176_keeps_x(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    poses = write_release(raw)
    for path in (raw / "pose").rglob("*.txt"):  # move every joint into the 256x176 frame
        values = np.loadtxt(path)
        values[values[:, 0] >= 0, 0] -= 40
        np.savetxt(path, values, fmt="%g")
    prepare_deepfashion(raw, tmp_path / "out", keypoints_frame_given="256x176", progress=False)
    name = flattened_name(Path(TREE["test"][1]))
    annotations = read_annotations(tmp_path / "out" / "fasion-resize-annotation-test.csv")
    expected = expected_256x176(poses[name])
    assert annotations[name][0].tolist() == expected[0].tolist()
    assert annotations[name][7].tolist() == [-1, -1]


def test_a_malformed_pose_file_and_a_missing_one_are_named(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_release(raw)
    pose = raw / "pose" / Path(TREE["train"][0]).with_suffix(".txt")
    pose.write_text("10 20\n30 40\n")
    with pytest.raises(DataError, match=r"01_1_front.txt' holds 2 line\(s\) of 2 value\(s\); expected 18 lines"):
        prepare_deepfashion(raw, tmp_path / "out", progress=False)
    pose.unlink()
    with pytest.raises(DataError, match=r"has no keypoint file for 1 image\(s\) of .*train_pairs.txt', e.g. "
                                        r"fashionMENDenimid0000008001_1front.jpg"):  # fmt: skip
        prepare_deepfashion(raw, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_pairs_line_that_is_not_target_and_sources_is_named(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_release(raw)
    (raw / "test_pairs.txt").write_text(f"img/{TREE['test'][0]},img/{TREE['test'][1]}\nimg/{TREE['test'][0]}\n")
    with pytest.raises(DataError, match=r"test_pairs.txt, line 2: expected 'target,source\[,source ...\]'"):
        prepare_deepfashion(raw, tmp_path / "out", progress=False)
