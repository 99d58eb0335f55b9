"""Convert raw DeepFashion / Market-1501 releases into the training layout of ``emca.data.dataset``.

DeepFashion comes in three releases, told apart by what the folder holds (:func:`deepfashion_release`):

- PATN / XingGAN (below): 256x256 images in ``train/`` and ``test/``, ``fasion-resize-*`` CSVs (sic); 256x176
  only.
- DPTN / CFLD (:mod:`emca.data.deepfashion_dptn`) and GFLA / NTED / PIDM (:mod:`emca.data.deepfashion_gfla`):
  the high-resolution ``img_highres`` trees, at 256x176 or 512x352 (:mod:`emca.data.deepfashion_highres`).

A folder already in emca's layout (the PATN file names with 256x176 or 512x352 images) is recognised, checked
and used as it is: nothing is written.

Expected raw layout of the PATN release (and of Market-1501, with ``market-*`` names)::

    RAW/train/*.jpg   RAW/test/*.jpg                   the images of each split
    RAW/fasion-resize-annotation-{train,test}.csv      (DeepFashion) or market-annotation-{train,test}.csv
    RAW/fasion-resize-pairs-{train,test}.csv           (DeepFashion) or market-pairs-{train,test}.csv

DeepFashion images are 256x256 (H x W); the output keeps the central 256x176 (40 px cut from each side), and
the keypoints' frame is read from the files or stated (:mod:`emca.data.deepfashion_frame`). Market-1501 images
are 128x64 already and are copied as they are. Pairs files are copied unchanged. Every output file is written
atomically, and the result is checked with :func:`emca.data.dataset.validate_split` before the command reports
success.
"""

from __future__ import annotations

import difflib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from emca.data import deepfashion_dptn, deepfashion_gfla
from emca.data.annotations import read_annotations, read_pairs, write_annotations, write_pairs
from emca.data.dataset import PRESETS, DatasetLayout, make_layout, validate_split
from emca.data.deepfashion_frame import CROP, KEYPOINT_FRAMES, RAW_SIZE, into_crop_frame
from emca.data.deepfashion_highres import JPEG_QUALITY, OUTPUT_SIZES, SPLITS, write_highres
from emca.errors import DataError
from emca.io import atomic_open, atomic_save_image

EXPECTED_PAIRS: dict[str, dict[str, int]] = {
    "deepfashion": {"train": 101_966, "test": 8_570},
    "market": {"train": 263_632, "test": 12_000},
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PATN = "the PATN / XingGAN release"
EMCA = "emca's layout"

# convert_image(source, destination) writes one output image
ImageConverter = Callable[[Path, Path], None]


def _open_checked(path: Path, height: int, width: int) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(f"Cannot read raw image '{path}': {err}.") from err
    if image.size != (width, height):
        raise DataError(f"Raw image '{path}' is {image.size[1]}x{image.size[0]} (HxW); expected {height}x{width}.")
    return image


def _crop_deepfashion_image(source: Path, destination: Path) -> None:
    height, width = RAW_SIZE
    with _open_checked(source, height, width) as image:
        cropped = image.crop((CROP, 0, width - CROP, height))
        options = {"quality": JPEG_QUALITY} if destination.suffix.lower() in (".jpg", ".jpeg") else {}
        atomic_save_image(cropped, destination, **options)


def _copy_market_image(source: Path, destination: Path) -> None:
    layout = PRESETS["market"]
    _open_checked(source, layout.height, layout.width).close()
    with open(source, "rb") as reader, atomic_open(destination, "wb") as writer:
        shutil.copyfileobj(reader, writer)


def _report_pair_count(dataset: str, split: str, found: int) -> None:
    expected = EXPECTED_PAIRS[dataset][split]
    if found == expected:
        print(f"{dataset} {split}: {found:,} pairs, as in the published split.")
    else:
        print(
            f"WARNING: {dataset} {split}: {found:,} pairs, but the published split has {expected:,}; results "
            "will not be comparable with published numbers."
        )


def missing_patn_files(dataset: str, raw_root: Path) -> list[str]:
    """What the PATN layout (the file names of ``PRESETS[dataset]``) needs and ``raw_root`` lacks; a near-miss
    name that the folder holds instead is named."""
    layout = PRESETS[dataset]
    present = sorted(path.name for path in raw_root.iterdir()) if raw_root.is_dir() else []
    missing = []
    for split in SPLITS:
        if not layout.image_dir_path(raw_root, split).is_dir():
            missing.append(f"{layout.image_dir.format(split=split)}/ (the {split} images)")
        for needed in (layout.annotation_path(raw_root, split), layout.pairs_path(raw_root, split)):
            if not needed.is_file():
                near = difflib.get_close_matches(needed.name, present, n=1, cutoff=0.8)
                missing.append(
                    needed.name
                    + (
                        f" (it holds '{near[0]}', a near miss: rename it if it is in this release's format)"
                        if near
                        else ""
                    )
                )
    return missing


def _require_folder(raw_root: Path) -> None:
    if not raw_root.is_dir():
        raise DataError(f"Raw folder '{raw_root}' does not exist (see `emca data prepare --help`).")


def _first_image(folder: Path) -> Path | None:
    return next((p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES), None)


def check_raw_release(dataset: str, raw_root: Path) -> None:
    """Before anything is written: every file the PATN layout needs is in ``raw_root``."""
    _require_folder(raw_root)
    missing = missing_patn_files(dataset, raw_root)
    if missing:
        raise DataError(
            f"Raw folder '{raw_root}' lacks: {'; '.join(missing)}. `emca data prepare --help` lists what the folder "
            "must hold and where the files come from."
        )


def _prepare(
    dataset: str,
    raw_root: Path,
    out_root: Path,
    convert_image: ImageConverter,
    annotations_of: Callable[[str], dict[str, np.ndarray]],
    progress: bool,
) -> dict[str, int]:
    layout: DatasetLayout = PRESETS[dataset]
    pair_counts = {}
    for split in SPLITS:
        raw_images = layout.image_dir_path(raw_root, split)
        pairs = read_pairs(layout.pairs_path(raw_root, split))
        image_paths = sorted(p for p in raw_images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        out_images = layout.image_dir_path(out_root, split)
        out_images.mkdir(parents=True, exist_ok=True)
        for path in tqdm(image_paths, desc=f"{dataset} {split} images", unit="img", disable=not progress):
            convert_image(path, out_images / path.name)
        write_annotations(layout.annotation_path(out_root, split), annotations_of(split))
        write_pairs(layout.pairs_path(out_root, split), pairs)
        validate_split(out_root, layout, split, progress=progress)
        print(f"{dataset} {split}: {len(image_paths):,} images written to {out_images}.")
        _report_pair_count(dataset, split, len(pairs))
        pair_counts[split] = len(pairs)
    return pair_counts


def deepfashion_release(raw_root: Path) -> tuple[str, str | None]:
    """Which DeepFashion release ``raw_root`` holds, from its files: (name, size of its images when it is
    already in emca's layout, else None). A folder of none of them is an error listing what each lacks."""
    _require_folder(raw_root)
    lacking = {
        deepfashion_dptn.NAME: deepfashion_dptn.missing_files(raw_root),
        deepfashion_gfla.NAME: deepfashion_gfla.missing_files(raw_root),
        PATN: missing_patn_files("deepfashion", raw_root),
    }
    for name, missing in lacking.items():
        if missing:
            continue
        if name != PATN:
            return name, None
        first = _first_image(PRESETS["deepfashion"].image_dir_path(raw_root, "train"))
        if first is not None:
            with Image.open(first) as image:
                width, height = image.size
            if f"{height}x{width}" in OUTPUT_SIZES:
                return EMCA, f"{height}x{width}"
        return PATN, None
    raise DataError(
        f"Raw folder '{raw_root}' is none of the DeepFashion releases emca reads: "
        + " ".join(f"As {name} it lacks: {'; '.join(missing)}." for name, missing in lacking.items())
        + " `emca data prepare --help` lists what each holds and where the files come from."
    )


def _use_as_it_is(raw_root: Path, out_root: Path, found: str, size: str, progress: bool) -> dict[str, int]:
    if found != size:
        raise DataError(
            f"'{raw_root}' is already in emca's layout at {found}; it cannot give {size} (prepare the release "
            "with the high-resolution images for that)."
        )
    height, width = OUTPUT_SIZES[found]
    layout = make_layout("deepfashion", height, width)
    counts = {split: len(validate_split(raw_root, layout, split, progress=progress).pairs) for split in SPLITS}
    size_flags = "" if found == "256x176" else f" data.height={height} data.width={width}"
    print(
        f"deepfashion: '{raw_root}' is already in emca's layout at {found} and checks out ({counts['train']:,} "
        f"train and {counts['test']:,} test pairs); it is used as it is and nothing was written to '{out_root}'. "
        f"Train on it with data.root={raw_root}{size_flags}."
    )
    return counts


def prepare_deepfashion(
    raw_root: str | os.PathLike,
    out_root: str | os.PathLike,
    keypoints_frame_given: str = "auto",
    progress: bool = True,
    size: str = "256x176",
) -> dict[str, int]:
    """Convert a DeepFashion release under ``out_root``, at ``size`` (256x176 or 512x352, the latter from the
    high-resolution releases only); returns pairs per split. The release is told from what the folder holds.
    ``keypoints_frame_given``: "auto" (read from the keypoints), "256x256" or "256x176"."""
    raw_root, out_root = Path(raw_root), Path(out_root)
    assert size in OUTPUT_SIZES and keypoints_frame_given in KEYPOINT_FRAMES, (size, keypoints_frame_given)
    release, found_size = deepfashion_release(raw_root)
    print(f"deepfashion: {release} ('{raw_root}').")
    if release == EMCA:
        return _use_as_it_is(raw_root, out_root, str(found_size), size, progress)
    if release == deepfashion_dptn.NAME:
        if keypoints_frame_given == "256x256":
            raise DataError(
                f"'{raw_root}' is {release}, whose keypoints are in the 256x176 frame; --keypoints-frame 256x256 "
                "does not apply to it."
            )
        return _with_pair_counts(write_highres(deepfashion_dptn.read_dptn(raw_root), out_root, size, progress))
    if release == deepfashion_gfla.NAME:
        splits = deepfashion_gfla.read_gfla(raw_root, keypoints_frame_given)
        return _with_pair_counts(write_highres(splits, out_root, size, progress))
    if size != "256x176":
        raise DataError(
            f"--size {size} needs high-resolution images; '{raw_root}' is {PATN} (256x256 images), which gives "
            "256x176 only."
        )
    layout = PRESETS["deepfashion"]
    annotations: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        first = _first_image(layout.image_dir_path(raw_root, split))
        if first is not None:
            _open_checked(first, *RAW_SIZE).close()  # before any keypoint is read or image written
        annotations[split] = read_annotations(layout.annotation_path(raw_root, split))
    cropped = into_crop_frame(annotations, keypoints_frame_given, "deepfashion")
    return _prepare("deepfashion", raw_root, out_root, _crop_deepfashion_image, cropped.__getitem__, progress)


def _with_pair_counts(counts: dict[str, int]) -> dict[str, int]:
    for split, found in counts.items():
        _report_pair_count("deepfashion", split, found)
    return counts


def prepare_market(raw_root: str | os.PathLike, out_root: str | os.PathLike, progress: bool = True) -> dict[str, int]:
    """Copy a 128x64 Market-1501 release (sizes checked) under ``out_root``; returns pairs per split."""
    check_raw_release("market", Path(raw_root))
    return _prepare(
        "market", Path(raw_root), Path(out_root), _copy_market_image,
        lambda split: read_annotations(PRESETS["market"].annotation_path(raw_root, split)), progress,
    )  # fmt: skip
