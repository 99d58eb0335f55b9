"""The DeepFashion release that DPTN, CFLD, PCDMs and MCLD use, converted into emca's layout at 256x176 or
512x352.

What the release folder holds::

    RAW/MEN/<category>/id_XXXXXXXX/NN_V_view.jpg    the In-shop high-resolution images (``img_highres``: the
    RAW/WOMEN/...                                    trees may also sit in RAW/img_highres/ or RAW/img/)
    RAW/train.lst  RAW/test.lst                     each split's images, by their flattened names
    RAW/fashion-resize-annotation-{train,test}.csv  keypoints in the 256x176 frame (spelled "fashion")
    RAW/fashion-resize-pairs-{train,test}.csv

A flattened name joins the tree path as the release's ``generate_fashion_datasets.py`` does:
``MEN/Denim/id_00000080/01_1_front.jpg`` is ``fashionMENDenimid0000008001_1front.jpg`` (the id's underscores
dropped, and all but the first of the file name's). Each listed image is resized (bicubic) to the output size and
written under its flattened name; the keypoints, in the 256x176 frame, are scaled to it (x2 at 512x352). The whole
training list is written, so the FID reference set (the training folder, as the GFLA lineage defines it) has the
release's count: 48,674 images in ``train.lst``, of which 37,016 appear in the pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from emca.data.annotations import read_annotations, read_pairs, write_annotations, write_pairs
from emca.data.dataset import make_layout, validate_split
from emca.data.keypoints import visible
from emca.errors import DataError
from emca.io import atomic_save_image

SPLITS = ("train", "test")
# the files of the release besides the image trees, per split
RELEASE_FILES = ("fashion-resize-annotation-{split}.csv", "fashion-resize-pairs-{split}.csv", "{split}.lst")
OUTPUT_SIZES = {"256x176": (256, 176), "512x352": (512, 352)}
ANNOTATION_FRAME = (256, 176)
JPEG_QUALITY = 95


def flattened_name(relative: Path) -> str:
    """``MEN/Denim/id_00000080/01_1_front.jpg`` -> ``fashionMENDenimid0000008001_1front.jpg``."""
    gender, category, identity, file_name = relative.parts[-4:]
    first, _, rest = file_name.partition("_")
    return f"fashion{gender}{category}{identity.replace('_', '')}{first}_{rest.replace('_', '')}"


def image_tree(raw_root: Path) -> Path | None:
    """The folder holding the MEN/ and WOMEN/ trees: RAW itself, RAW/img_highres or RAW/img."""
    for folder in (raw_root, raw_root / "img_highres", raw_root / "img"):
        if (folder / "MEN").is_dir() or (folder / "WOMEN").is_dir():
            return folder
    return None


def missing_files(raw_root: Path) -> list[str]:
    """What the release needs and ``raw_root`` lacks (empty: it is this release)."""
    missing = [name.format(split=split) for split in SPLITS for name in RELEASE_FILES
               if not (raw_root / name.format(split=split)).is_file()]  # fmt: skip
    if image_tree(raw_root) is None:
        missing.append("MEN/ and WOMEN/ (the img_highres trees, also accepted under img_highres/ or img/)")
    return missing


def _listed(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [name for name in names if name]


def _scaled(keypoints: np.ndarray, factor: int) -> np.ndarray:
    scaled = keypoints.copy()
    scaled[visible(keypoints)] *= factor
    return scaled


def prepare_highres(raw_root: Path, out_root: Path, size: str, progress: bool = True) -> dict[str, int]:
    """Convert the release in ``raw_root`` into ``out_root`` at ``size`` (a key of OUTPUT_SIZES); returns the
    pairs per split. Everything is read and checked before the first image is written."""
    height, width = OUTPUT_SIZES[size]
    factor = height // ANNOTATION_FRAME[0]
    tree = image_tree(raw_root)
    assert tree is not None, "missing_files was checked"
    index = {flattened_name(path.relative_to(tree)): path for path in tree.rglob("*")
             if path.is_file() and len(path.relative_to(tree).parts) == 4}  # fmt: skip
    splits = {}
    for split in SPLITS:
        names = _listed(raw_root / f"{split}.lst")
        absent = [name for name in names if name not in index]
        if absent:
            raise DataError(
                f"'{raw_root / f'{split}.lst'}' lists {len(absent):,} image(s) that the trees under '{tree}' do not "
                f"hold, e.g. {', '.join(absent[:3])} (looked up by the flattened name of each MEN/ or WOMEN/ path)."
            )
        annotation_path = raw_root / f"fashion-resize-annotation-{split}.csv"
        annotations = read_annotations(annotation_path)
        beyond = [name for name, points in annotations.items()
                  if (visible(points) & (points[:, 1] >= ANNOTATION_FRAME[1])).any()]  # fmt: skip
        if beyond:
            raise DataError(
                f"'{annotation_path}': '{beyond[0]}' has a joint beyond x = 175, so these keypoints are not in the "
                "256x176 frame this release's CSVs use; is the file from another release?"
            )
        splits[split] = (names, annotations, read_pairs(raw_root / f"fashion-resize-pairs-{split}.csv"))
    layout = make_layout("deepfashion", height, width)
    counts = {}
    for split, (names, annotations, pairs) in splits.items():
        out_images = layout.image_dir_path(out_root, split)
        out_images.mkdir(parents=True, exist_ok=True)
        for name in tqdm(names, desc=f"deepfashion {split} images ({size})", unit="img", disable=not progress):
            try:
                with Image.open(index[name]) as image:
                    resized = image.convert("RGB").resize((width, height), Image.BICUBIC)
            except (OSError, UnidentifiedImageError, SyntaxError) as err:
                raise DataError(f"Cannot read raw image '{index[name]}': {err}.") from err
            atomic_save_image(resized, out_images / name, quality=JPEG_QUALITY)
        write_annotations(layout.annotation_path(out_root, split),
                          {name: _scaled(points, factor) for name, points in annotations.items()})  # fmt: skip
        write_pairs(layout.pairs_path(out_root, split), pairs)
        validate_split(out_root, layout, split, progress=progress)
        print(f"deepfashion {split}: {len(names):,} images written to {out_images} at {size}.")
        counts[split] = len(pairs)
    return counts
