"""Convert raw DeepFashion / Market-1501 releases into the training layout of ``emca.data.dataset``.

DeepFashion comes in two releases, told apart by what the folder holds: the DPTN / CFLD one (high-resolution
images, ``train.lst``, ``fashion-resize-*``; :mod:`emca.data.deepfashion_highres`, 256x176 or 512x352) and the
PATN one below (256x256 images, 256x176 only).

Expected raw layout (the file names of the PATN / Pose-Transfer release, as in the presets)::

    RAW/train/*.jpg   RAW/test/*.jpg                   the images of each split
    RAW/fasion-resize-annotation-{train,test}.csv      (DeepFashion) or market-annotation-{train,test}.csv
    RAW/fasion-resize-pairs-{train,test}.csv           (DeepFashion) or market-pairs-{train,test}.csv

DeepFashion images are 256x256 (H x W); the output keeps the central 256x176 (40 px cut from each side).
The annotation may be in either frame: the CSVs distributed with PATN and DPTN are already in the 256x176
one. The frame is read from the files (``keypoints_frame="auto"``): a visible joint beyond x = 175, the
crop's last column, means the 256x256 frame, whose x coordinates are then shifted by -40 (joints that fall
outside the crop become missing); otherwise the keypoints are kept as they are. ``"256x256"`` or
``"256x176"`` (CLI: ``--keypoints-frame``) states it instead; the command prints which frame it used and
why. Market-1501 images are 128x64 already and are copied as they are. Pairs files are copied unchanged. Every output file is written atomically, and the
result is checked with :func:`emca.data.dataset.validate_split` before the command reports success.
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

from emca.data.annotations import read_annotations, read_pairs, write_annotations, write_pairs
from emca.data.dataset import PRESETS, DatasetLayout, validate_split
from emca.data.deepfashion_highres import OUTPUT_SIZES, missing_files, prepare_highres
from emca.data.keypoints import MISSING, visible
from emca.errors import DataError
from emca.io import atomic_open, atomic_save_image

SPLITS = ("train", "test")
EXPECTED_PAIRS: dict[str, dict[str, int]] = {
    "deepfashion": {"train": 101_966, "test": 8_570},
    "market": {"train": 263_632, "test": 12_000},
}
DEEPFASHION_RAW_SIZE = (256, 256)  # (H, W)
DEEPFASHION_CROP = 40  # px cut from the left and from the right
DEEPFASHION_CROPPED_WIDTH = DEEPFASHION_RAW_SIZE[1] - 2 * DEEPFASHION_CROP  # 176
KEYPOINT_FRAMES = ("auto", "256x256", "256x176")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
JPEG_QUALITY = 95  # re-encoding cropped JPEGs at PIL's default 75 would visibly degrade them

# convert_image(source, destination) writes one output image
ImageConverter = Callable[[Path, Path], None]


def _open_checked(path: Path, height: int, width: int) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(f"Cannot read raw image '{path}': {err}.") from err
    if image.size != (width, height):
        raise DataError(
            f"Raw image '{path}' is {image.size[1]}x{image.size[0]} (HxW); expected {height}x{width}. Is this the "
            "right release (or already converted)?"
        )
    return image


def _crop_deepfashion_image(source: Path, destination: Path) -> None:
    height, width = DEEPFASHION_RAW_SIZE
    with _open_checked(source, height, width) as image:
        cropped = image.crop((DEEPFASHION_CROP, 0, width - DEEPFASHION_CROP, height))
        options = {"quality": JPEG_QUALITY} if destination.suffix.lower() in (".jpg", ".jpeg") else {}
        atomic_save_image(cropped, destination, **options)


def _copy_market_image(source: Path, destination: Path) -> None:
    layout = PRESETS["market"]
    _open_checked(source, layout.height, layout.width).close()
    with open(source, "rb") as reader, atomic_open(destination, "wb") as writer:
        shutil.copyfileobj(reader, writer)


def crop_deepfashion_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """Keypoints (18, 2) (row, col) in the 256x256 frame -> the 256x176 crop; joints cut off become -1."""
    shifted = keypoints.copy()
    present = visible(keypoints)
    shifted[present, 1] -= DEEPFASHION_CROP
    outside = present & ((shifted[:, 1] < 0) | (shifted[:, 1] >= DEEPFASHION_CROPPED_WIDTH))
    shifted[outside] = MISSING
    return shifted


def keypoints_frame(annotations: dict[str, np.ndarray]) -> tuple[str, str]:
    """The frame of DeepFashion keypoints read from them, and why: ("256x256" | "256x176", reason)."""
    for name, keypoints in annotations.items():
        beyond = visible(keypoints) & (keypoints[:, 1] >= DEEPFASHION_CROPPED_WIDTH)
        if beyond.any():
            column = int(keypoints[beyond][0, 1])
            return "256x256", f"'{name}' has a joint at x = {column}, beyond the 256x176 crop's last column (175)"
    return "256x176", f"no joint of the {len(annotations):,} annotated images lies beyond x = 175"


def _report_pair_count(dataset: str, split: str, found: int) -> None:
    expected = EXPECTED_PAIRS[dataset][split]
    if found == expected:
        print(f"{dataset} {split}: {found:,} pairs, as in the published split.")
    else:
        print(
            f"WARNING: {dataset} {split}: {found:,} pairs, but the published split has {expected:,}; results "
            "will not be comparable with published numbers."
        )


def check_raw_release(dataset: str, raw_root: Path) -> None:
    """Before anything is written: every file the PATN layout needs is in ``raw_root`` (a near-miss name, such
    as DPTN's correctly spelled ``fashion-resize-*``, is named), and the images are not already converted."""
    layout = PRESETS[dataset]
    present = sorted(path.name for path in raw_root.iterdir()) if raw_root.is_dir() else []
    for split in SPLITS:
        images = layout.image_dir_path(raw_root, split)
        if not images.is_dir():
            raise DataError(f"Raw image folder '{images}' does not exist (see `emca data prepare --help`).")
        for needed in (layout.annotation_path(raw_root, split), layout.pairs_path(raw_root, split)):
            if needed.is_file():
                continue
            near = difflib.get_close_matches(needed.name, present, n=1, cutoff=0.8)
            hint = (
                f" It holds '{near[0]}', a near miss: that is the DPTN / CFLD release's spelling, which emca reads "
                "when the folder also holds that release's other files (see below); if the file is in PATN's "
                f"format, rename it to '{needed.name}'."
                if near
                else " `emca data prepare --help` lists what the folder must hold and where the files come from."
            )
            raise DataError(f"Raw folder '{raw_root}' has no '{needed.name}'.{hint}")
    first = next((p for p in sorted(layout.image_dir_path(raw_root, "train").iterdir())
                  if p.suffix.lower() in IMAGE_SUFFIXES), None)  # fmt: skip
    if dataset == "deepfashion" and first is not None:
        with Image.open(first) as image:
            converted = image.size == (layout.width, layout.height)
        if converted:
            height, width = DEEPFASHION_RAW_SIZE
            raise DataError(
                f"Raw image '{first}' is {layout.height}x{layout.width} (HxW); expected {height}x{width}. The folder "
                f"'{raw_root}' is already in emca's layout and needs no prepare: check it with `emca data validate "
                f"{raw_root} --preset {dataset}` and train with data.root={raw_root}."
            )


def _prepare(
    dataset: str,
    raw_root: Path,
    out_root: Path,
    convert_image: ImageConverter,
    convert_keypoints: Callable[[np.ndarray], np.ndarray] | None,
    progress: bool,
) -> dict[str, int]:
    layout: DatasetLayout = PRESETS[dataset]
    pair_counts = {}
    for split in SPLITS:
        raw_images = layout.image_dir_path(raw_root, split)
        annotations = read_annotations(layout.annotation_path(raw_root, split))
        pairs = read_pairs(layout.pairs_path(raw_root, split))
        image_paths = sorted(p for p in raw_images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        out_images = layout.image_dir_path(out_root, split)
        out_images.mkdir(parents=True, exist_ok=True)
        for path in tqdm(image_paths, desc=f"{dataset} {split} images", unit="img", disable=not progress):
            convert_image(path, out_images / path.name)
        if convert_keypoints is not None:
            converted = {name: convert_keypoints(keypoints) for name, keypoints in annotations.items()}
            lost = sum(int(visible(kp).sum() - visible(converted[name]).sum()) for name, kp in annotations.items())
            total = sum(int(visible(kp).sum()) for kp in annotations.values())
            print(f"{dataset} {split}: {lost:,} of {total:,} joints fell outside the crop and are now missing.")
            annotations = converted
        write_annotations(layout.annotation_path(out_root, split), annotations)
        write_pairs(layout.pairs_path(out_root, split), pairs)
        validate_split(out_root, layout, split, progress=progress)
        print(f"{dataset} {split}: {len(image_paths):,} images written to {out_images}.")
        _report_pair_count(dataset, split, len(pairs))
        pair_counts[split] = len(pairs)
    return pair_counts


def prepare_deepfashion(
    raw_root: str | os.PathLike,
    out_root: str | os.PathLike,
    keypoints_frame_given: str = "auto",
    progress: bool = True,
    size: str = "256x176",
) -> dict[str, int]:
    """Convert a DeepFashion release under ``out_root``, at ``size`` (256x176 or 512x352, the latter from the
    DPTN / CFLD release's high-resolution images only); returns pairs per split. The release is told from what the
    folder holds. ``keypoints_frame_given`` (PATN release): "auto" (read from the annotation), "256x256" or
    "256x176"."""
    raw_root = Path(raw_root)
    assert size in OUTPUT_SIZES and keypoints_frame_given in KEYPOINT_FRAMES, (size, keypoints_frame_given)
    highres_missing = missing_files(raw_root)
    if not highres_missing:
        if keypoints_frame_given == "256x256":
            raise DataError(
                f"'{raw_root}' is the DPTN / CFLD release, whose keypoints are in the 256x176 frame; "
                "--keypoints-frame 256x256 does not apply to it."
            )
        print("deepfashion: the DPTN / CFLD release (fashion-resize-*.csv, train.lst / test.lst, img_highres trees).")
        return prepare_highres(raw_root, Path(out_root), size, progress)
    try:
        check_raw_release("deepfashion", raw_root)
    except DataError as err:
        raise DataError(
            f"{err} As the DPTN / CFLD release (the other one in use) it lacks: {'; '.join(highres_missing)}."
        ) from err
    if size != "256x176":
        raise DataError(
            f"--size {size} needs the high-resolution images of the DPTN / CFLD release; '{raw_root}' is the PATN "
            f"release (256x256 images), which gives 256x176 only. The other release lacks here: "
            f"{'; '.join(highres_missing)}."
        )
    frame, reason = keypoints_frame_given, "as stated with --keypoints-frame"
    if frame == "auto":
        layout = PRESETS["deepfashion"]
        annotations: dict[str, np.ndarray] = {}
        for split in SPLITS:
            annotations |= read_annotations(layout.annotation_path(raw_root, split))
        frame, reason = keypoints_frame(annotations)
    action = "x shifted by -40 into the crop" if frame == "256x256" else "kept as they are"
    print(f"deepfashion keypoints: the {frame} frame ({reason}); {action}.")
    return _prepare(
        "deepfashion", raw_root, Path(out_root), _crop_deepfashion_image,
        crop_deepfashion_keypoints if frame == "256x256" else None, progress,
    )  # fmt: skip


def prepare_market(raw_root: str | os.PathLike, out_root: str | os.PathLike, progress: bool = True) -> dict[str, int]:
    """Copy a 128x64 Market-1501 release (sizes checked) under ``out_root``; returns pairs per split."""
    check_raw_release("market", Path(raw_root))
    return _prepare("market", Path(raw_root), Path(out_root), _copy_market_image, None, progress)
