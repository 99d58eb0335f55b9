"""The DPTN / CFLD release of DeepFashion (img_highres trees, train.lst, fashion-resize-* CSVs) into emca's layout at
256x176 and 512x352, from a small fake release laid out as the real one."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from _fake_data import random_image
from PIL import Image

from emca.data.annotations import read_annotations, read_pairs, write_annotations, write_pairs
from emca.data.deepfashion_highres import flattened_name
from emca.data.prepare import prepare_deepfashion
from emca.errors import DataError

HIGHRES = (330, 225)  # (H, W): the aspect of the release's 1101x750 images, small for the test
TREE = {
    "train": ["MEN/Denim/id_00000080/01_1_front.jpg", "MEN/Denim/id_00000080/01_2_side.jpg"],
    "test": ["WOMEN/Dresses/id_00000002/02_1_front.jpg", "WOMEN/Dresses/id_00000002/02_3_back.jpg"],
}


def keypoints(shift: int) -> np.ndarray:
    """A person in the 256x176 frame: every joint visible, the rightmost at x = 175."""
    points = np.stack([np.arange(18) * 12 + 20 + shift, np.linspace(10, 175, 18).round()], axis=1)
    return points.astype(np.int64)


def write_release(raw: Path, tree_folder: str = "img_highres") -> dict[str, Path]:
    rng = np.random.default_rng(0)
    sources = {}
    for split, paths in TREE.items():
        names = []
        for relative in paths:
            path = raw / tree_folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            random_image(rng, *HIGHRES).save(path, quality=98)
            name = flattened_name(Path(relative))
            sources[name] = path
            names.append(name)
        (raw / f"{split}.lst").write_text("".join(f"{name}\n" for name in names))
        write_annotations(raw / f"fashion-resize-annotation-{split}.csv",
                          {name: keypoints(i) for i, name in enumerate(names)})  # fmt: skip
        write_pairs(raw / f"fashion-resize-pairs-{split}.csv", [(names[0], names[1]), (names[1], names[0])])
    return sources


def test_flattened_names_are_the_releases() -> None:
    assert flattened_name(Path("MEN/Denim/id_00000080/01_1_front.jpg")) == "fashionMENDenimid0000008001_1front.jpg"
    assert flattened_name(Path("img_highres/WOMEN/Blouses_Shirts/id_00000001/02_7_additional.jpg")) == (
        "fashionWOMENBlouses_Shirtsid0000000102_7additional.jpg"
    )


@pytest.mark.parametrize("tree_folder", ["img_highres", "."])
def test_both_sizes_resize_every_listed_image_and_scale_the_keypoints(tmp_path: Path, tree_folder: str) -> None:
    raw = tmp_path / "raw"
    sources = write_release(raw, tree_folder)
    outputs = {}
    for size, (height, width) in (("256x176", (256, 176)), ("512x352", (512, 352))):
        out = tmp_path / size
        assert prepare_deepfashion(raw, out, size=size, progress=False) == {"train": 2, "test": 2}
        outputs[size] = out
        for split, paths in TREE.items():
            for relative in paths:
                name = flattened_name(Path(relative))
                written = np.asarray(Image.open(out / split / name).convert("RGB"))
                # independently: the source resized (bicubic) by PIL and stored as JPEG at quality 95
                encoded = BytesIO()
                Image.open(sources[name]).convert("RGB").resize((width, height), Image.BICUBIC).save(
                    encoded, "JPEG", quality=95
                )
                assert written.shape == (height, width, 3)
                np.testing.assert_array_equal(written, np.asarray(Image.open(encoded).convert("RGB")))
            assert read_pairs(out / f"fasion-resize-pairs-{split}.csv") == read_pairs(
                raw / f"fashion-resize-pairs-{split}.csv"
            )
    for split in TREE:
        small = read_annotations(outputs["256x176"] / f"fasion-resize-annotation-{split}.csv")
        large = read_annotations(outputs["512x352"] / f"fasion-resize-annotation-{split}.csv")
        raw_points = read_annotations(raw / f"fashion-resize-annotation-{split}.csv")
        for name in small:
            np.testing.assert_array_equal(small[name], raw_points[name])
            np.testing.assert_array_equal(large[name], 2 * small[name])


def test_a_listed_image_missing_from_the_trees_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_release(raw)
    (raw / "img_highres" / TREE["test"][1]).unlink()
    with pytest.raises(
        DataError, match=r"test.lst' lists 1 image\(s\) that the trees .* fashionWOMENDressesid0000000202_3back"
    ):
        prepare_deepfashion(raw, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_keypoints_in_another_frame_are_refused(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_release(raw)
    name = flattened_name(Path(TREE["train"][0]))
    points = keypoints(0)
    points[3, 1] = 200  # beyond x = 175: the 256x256 frame
    write_annotations(raw / "fashion-resize-annotation-train.csv", {name: points})
    with pytest.raises(DataError, match="has a joint beyond x = 175"):
        prepare_deepfashion(raw, tmp_path / "out", progress=False)


def test_a_folder_of_neither_release_lists_what_each_lacks(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_release(raw)
    (raw / "train.lst").unlink()
    with pytest.raises(DataError) as error:
        prepare_deepfashion(raw, tmp_path / "out", progress=False)
    message = str(error.value)
    assert "is none of the DeepFashion releases emca reads" in message
    assert "As the DPTN / CFLD release it lacks: train.lst." in message
    assert "As the GFLA / NTED / PIDM release it lacks: train_pairs.txt; train.lst; test_pairs.txt; pose/" in message
    assert "As the PATN / XingGAN release it lacks: train/ (the train images); fasion-resize-annotation" in message


def test_the_patn_release_cannot_make_512x352(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for split in ("train", "test"):
        (raw / split).mkdir(parents=True)
        random_image(np.random.default_rng(1), 256, 256).save(raw / split / "fashionMENDenimid0000008001_1front.jpg")
        write_annotations(
            raw / f"fasion-resize-annotation-{split}.csv", {"fashionMENDenimid0000008001_1front.jpg": keypoints(0)}
        )
        write_pairs(raw / f"fasion-resize-pairs-{split}.csv", [])
    with pytest.raises(DataError, match="--size 512x352 needs high-resolution images; .* is the PATN"):
        prepare_deepfashion(raw, tmp_path / "out", size="512x352", progress=False)
    assert not (tmp_path / "out").exists()
