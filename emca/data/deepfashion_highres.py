"""What the two high-resolution DeepFashion releases share: the ``img_highres`` trees, the flattened names, and
the writer that resizes each listed image into emca's layout at 256x176 or 512x352.

The trees::

    RAW/MEN/<category>/id_XXXXXXXX/NN_V_view.jpg    the In-shop high-resolution images (1101x750); the trees may
    RAW/WOMEN/...                                    also sit in RAW/img_highres/ or RAW/img/

A flattened name joins a tree path as PATN's ``generate_fashion_datasets.py`` does:
``MEN/Denim/id_00000080/01_1_front.jpg`` is ``fashionMENDenimid0000008001_1front.jpg`` (the id's underscores
dropped, and all but the first of the file name's). Each listed image is resized (bicubic) to the output size and
written under its flattened name; the keypoints, in the 256x176 frame, are scaled to it (x2 at 512x352). A
split's whole list is written, so the FID reference set (the training folder, as the GFLA lineage defines it)
has the release's count: 48,674 images in ``train.lst``, of which 37,016 appear in the pairs.

The readers: :mod:`emca.data.deepfashion_dptn` (DPTN / CFLD) and :mod:`emca.data.deepfashion_gfla` (GFLA /
NTED / PIDM).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from emca.data.annotations import write_annotations, write_pairs
from emca.data.dataset import make_layout, validate_split
from emca.data.deepfashion_frame import CROPPED_WIDTH, RAW_SIZE
from emca.data.keypoints import visible
from emca.errors import DataError
from emca.io import atomic_save_image

SPLITS = ("train", "test")
OUTPUT_SIZES = {"256x176": (256, 176), "512x352": (512, 352)}
ANNOTATION_FRAME = (RAW_SIZE[0], CROPPED_WIDTH)  # the keypoints' frame, as the readers return them
JPEG_QUALITY = 95  # re-encoding at PIL's default 75 would visibly degrade the images
TREE_DEPTH = 4  # MEN/<category>/<id>/<file>
TREES = "MEN/ and WOMEN/ (the img_highres trees, also accepted under img_highres/ or img/)"


@dataclass(frozen=True)
class HighresSplit:
    """One split, read and checked: each image's source file by flattened name, keypoints in the 256x176 frame
    (row, col), and (source, target) pairs of flattened names."""

    images: dict[str, Path]
    annotations: dict[str, np.ndarray]
    pairs: list[tuple[str, str]]


def flattened_name(relative: Path) -> str:
    """``MEN/Denim/id_00000080/01_1_front.jpg`` -> ``fashionMENDenimid0000008001_1front.jpg`` (leading folders
    such as ``img/`` are ignored)."""
    gender, category, identity, file_name = relative.parts[-TREE_DEPTH:]
    first, _, rest = file_name.partition("_")
    return f"fashion{gender}{category}{identity.replace('_', '')}{first}_{rest.replace('_', '')}"


def as_flattened(entry: str) -> str:
    """An image named in a release's list: a tree path (flattened) or already a flattened name."""
    return flattened_name(Path(entry)) if "/" in entry else entry


def image_tree(raw_root: Path) -> Path | None:
    """The folder holding the MEN/ and WOMEN/ trees: RAW itself, RAW/img_highres or RAW/img."""
    for folder in (raw_root, raw_root / "img_highres", raw_root / "img"):
        if (folder / "MEN").is_dir() or (folder / "WOMEN").is_dir():
            return folder
    return None


def release_lacks(raw_root: Path, files: tuple[str, ...], folders: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """What a high-resolution release needs and ``raw_root`` lacks (empty: it is that release): each of ``files``
    per split (``{split}`` in the name), each ``(folder, what it holds)`` of ``folders``, and the image trees."""
    missing = [name.format(split=split) for split in SPLITS for name in files
               if not (raw_root / name.format(split=split)).is_file()]  # fmt: skip
    missing += [f"{folder}/ ({holds})" for folder, holds in folders if not (raw_root / folder).is_dir()]
    return missing + ([TREES] if image_tree(raw_root) is None else [])


def tree_files(tree: Path, suffix: str | None = None) -> dict[str, Path]:
    """``{flattened name: path}`` of the files four levels below ``tree`` (with ``suffix`` only, if given; the
    name then takes the suffix ``.jpg``, as the images' do)."""
    index = {}
    for path in tree.rglob("*"):
        relative = path.relative_to(tree)
        if len(relative.parts) != TREE_DEPTH or not path.is_file():
            continue
        if suffix is None:
            index[flattened_name(relative)] = path
        elif path.suffix == suffix:
            index[flattened_name(relative.with_suffix(".jpg"))] = path
    return index


def listed_names(path: Path) -> list[str]:
    """A ``.lst`` file's images as flattened names (a line may hold a flattened name or a tree path)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [as_flattened(line) for line in lines if line]


def images_of(list_path: Path, tree: Path, index: dict[str, Path]) -> dict[str, Path]:
    """The source file of every image ``list_path`` names; all of them, or an error naming the absent ones."""
    names = listed_names(list_path)
    absent = [name for name in names if name not in index]
    if absent:
        raise DataError(
            f"'{list_path}' lists {len(absent):,} image(s) that the trees under '{tree}' do not hold, e.g. "
            f"{', '.join(absent[:3])} (looked up by the flattened name of each MEN/ or WOMEN/ path)."
        )
    return {name: index[name] for name in names}


def _scaled(keypoints: np.ndarray, factor: int) -> np.ndarray:
    scaled = keypoints.copy()
    scaled[visible(keypoints)] *= factor
    return scaled


def write_highres(splits: dict[str, HighresSplit], out_root: Path, size: str, progress: bool = True) -> dict[str, int]:
    """Write the checked ``splits`` into emca's layout under ``out_root`` at ``size`` (a key of OUTPUT_SIZES);
    returns the pairs per split."""
    height, width = OUTPUT_SIZES[size]
    factor = height // ANNOTATION_FRAME[0]
    layout = make_layout("deepfashion", height, width)
    counts = {}
    for split, contents in splits.items():
        out_images = layout.image_dir_path(out_root, split)
        out_images.mkdir(parents=True, exist_ok=True)
        for name, source in tqdm(contents.images.items(), desc=f"deepfashion {split} images ({size})",
                                 unit="img", disable=not progress):  # fmt: skip
            try:
                with Image.open(source) as image:
                    resized = image.convert("RGB").resize((width, height), Image.BICUBIC)
            except (OSError, UnidentifiedImageError, SyntaxError) as err:
                raise DataError(f"Cannot read raw image '{source}': {err}.") from err
            atomic_save_image(resized, out_images / name, quality=JPEG_QUALITY)
        write_annotations(layout.annotation_path(out_root, split),
                          {name: _scaled(points, factor) for name, points in contents.annotations.items()})  # fmt: skip
        write_pairs(layout.pairs_path(out_root, split), contents.pairs)
        validate_split(out_root, layout, split, progress=progress)
        print(f"deepfashion {split}: {len(contents.images):,} images written to {out_images} at {size}.")
        counts[split] = len(contents.pairs)
    return counts
