"""Pose-transfer pairs in the PATN layout: where the files live, how they are checked, how items are loaded.

A split ``train`` of a dataset rooted at ``root`` consists of (names from a :class:`DatasetLayout`)::

    root/<image_dir>/<image name>        e.g. root/train/fashionMENDenimid0000008001_1front.jpg
    root/<annotation_file>               e.g. root/fasion-resize-annotation-train.csv
    root/<pairs_file>                    e.g. root/fasion-resize-pairs-train.csv

``{split}`` in any of the three names is replaced by the split's name. Everything a run needs is checked
before training starts (:func:`validate_split`), so a bad row fails in seconds with its file and line
instead of hours later inside a dataloader worker. That check reads only image headers; ``python -m
emca.data validate`` decodes every image as well, which also finds truncated or corrupt files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from tqdm import tqdm

from emca.data.annotations import read_annotations, read_pairs
from emca.data.batch import IMAGE_CHANNELS
from emca.data.keypoints import DEFAULT_SIGMA, JOINT_NAMES, NUM_JOINTS, flip_keypoints, pose_heatmaps, visible
from emca.data.photo import ImageFailure, read_image
from emca.errors import DataError

SubsetMode = Literal["first", "even"]

# how many offending names an error message lists before summarising the rest as a count
_LISTED = 5
# the image check shows a progress bar only once it has run this long, so quick checks print nothing
_PROGRESS_DELAY_S = 2.0
# PIL opens 16-bit grayscale PNG, TIFF and PGM files in these modes; its convert("RGB") would clip every
# sample above 255 to white, so their samples are scaled from 0..65535 instead


@dataclass(frozen=True)
class DatasetLayout:
    """File names of a dataset, relative to its root; ``{split}`` is replaced by the split name.

    ``height`` / ``width`` are the size every image must have (``None`` in a preset whose size comes
    from the configuration, such as ``synthetic``).
    """

    image_dir: str
    annotation_file: str
    pairs_file: str
    height: int | None = None
    width: int | None = None

    def image_dir_path(self, root: str | Path, split: str) -> Path:
        return Path(root) / self.image_dir.format(split=split)

    def annotation_path(self, root: str | Path, split: str) -> Path:
        return Path(root) / self.annotation_file.format(split=split)

    def pairs_path(self, root: str | Path, split: str) -> Path:
        return Path(root) / self.pairs_file.format(split=split)


PRESETS: dict[str, DatasetLayout] = {
    "deepfashion": DatasetLayout(
        "{split}", "fasion-resize-annotation-{split}.csv", "fasion-resize-pairs-{split}.csv", 256, 176
    ),
    "market": DatasetLayout("{split}", "market-annotation-{split}.csv", "market-pairs-{split}.csv", 128, 64),
    "synthetic": DatasetLayout("{split}", "synthetic-annotation-{split}.csv", "synthetic-pairs-{split}.csv"),
}


def make_layout(
    preset: str,
    height: int | None = None,
    width: int | None = None,
    image_dir: str | None = None,
    annotation_file: str | None = None,
    pairs_file: str | None = None,
) -> DatasetLayout:
    """The layout of ``preset`` with every argument that is not ``None`` overriding the preset's value. The
    commands check the values where they start (the data schema, ``emca data``'s flags); here, a preset
    without a fixed size and no size given is a ValueError."""
    assert preset in PRESETS, preset
    overrides = {
        "height": height,
        "width": width,
        "image_dir": image_dir,
        "annotation_file": annotation_file,
        "pairs_file": pairs_file,
    }
    layout = dataclasses.replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
    for field in ("height", "width"):
        if getattr(layout, field) is None:
            raise ValueError(f"the '{preset}' preset has no fixed image size; give the {field}.")
        assert getattr(layout, field) > 0, layout
    return layout


@dataclass(frozen=True)
class SplitContents:
    """The checked annotation and pair lists of one split (pairs possibly reduced to a subset)."""

    split: str
    image_dir: Path
    annotations: dict[str, np.ndarray]
    pairs: list[tuple[str, str]]

    @property
    def image_names(self) -> list[str]:
        """Every image used by a pair, in order of first use."""
        return list(dict.fromkeys(name for pair in self.pairs for name in pair))


def _line_of(path: Path, matches: Callable[[str], bool]) -> int | str:
    """1-based number of the first line of ``path`` satisfying ``matches`` (for error messages)."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if matches(line):
                return line_number
    return "?"


def _annotation_line(path: Path, name: str) -> int | str:
    return _line_of(path, lambda line: line.split(":", 1)[0].strip() == name)


def _pairs_line(path: Path, pair: tuple[str, str]) -> int | str:
    return _line_of(path, lambda line: tuple(field.strip() for field in line.split(",")) == pair)


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _check_keypoints(annotations: dict[str, np.ndarray], path: Path, height: int, width: int) -> None:
    """Present joints must be inside the image; report the first offender with its line.

    ``read_annotations`` has already made every coordinate -1 or >= 0, with both -1 for a missing joint.
    """
    if not annotations:
        return
    names = list(annotations)
    keypoints = np.stack([annotations[name] for name in names])  # (N, 18, 2) (row, col)
    present = visible(keypoints.reshape(-1, 2)).reshape(keypoints.shape[:2])
    rows, cols = keypoints[..., 0], keypoints[..., 1]
    outside = present & ((rows >= height) | (cols >= width))
    if outside.any():
        image, joint = np.argwhere(outside)[0]
        row, col = keypoints[image, joint]
        fits_swapped = not (present & ((cols >= height) | (rows >= width))).any()
        swap_hint = " Did you swap x and y? The PATN format lists y (row) first." if fits_swapped else ""
        raise DataError(
            f"{path}, line {_annotation_line(path, names[image])}: joint '{JOINT_NAMES[joint]}' of "
            f"'{names[image]}' is at (row {row}, col {col}), outside the {height}x{width} image (rows "
            f"0..{height - 1}, cols 0..{width - 1}); {int(outside.sum())} joint(s) in this file are outside. "
            "Keypoints must be in the stored image's frame: convert a 256x256 DeepFashion release with "
            "`emca data prepare deepfashion RAW OUT`, or set data.height / data.width to the "
            f"size of your images.{swap_hint}"
        )


def _check_pairs(
    pairs: list[tuple[str, str]], annotations: dict[str, np.ndarray], pairs_path: Path, annotation_path: Path
) -> None:
    unannotated = [pair for pair in pairs if pair[0] not in annotations or pair[1] not in annotations]
    if unannotated:
        pair = unannotated[0]
        name = pair[0] if pair[0] not in annotations else pair[1]
        raise DataError(
            f"{pairs_path}, line {_pairs_line(pairs_path, pair)}: image '{name}' has no row in "
            f"{annotation_path} ({len(unannotated)} pair(s) in this file name unannotated images). Add its "
            "keypoints to the annotation file or remove the pair (`emca data pairs` rebuilds "
            "pairs from an annotation file)."
        )
    poseless = {name for name, keypoints in annotations.items() if not visible(keypoints).any()}
    poseless_pairs = [pair for pair in pairs if pair[0] in poseless or pair[1] in poseless]
    if poseless_pairs:
        pair = poseless_pairs[0]
        name = pair[0] if pair[0] in poseless else pair[1]
        raise DataError(
            f"{pairs_path}, line {_pairs_line(pairs_path, pair)}: image '{name}' has all {NUM_JOINTS} joints "
            f"missing (-1) in {annotation_path}, so it has no pose to transfer ({len(poseless_pairs)} pair(s) in "
            "this file use such images). Annotate the image or remove its pairs."
        )


def select_pairs(
    pairs: list[tuple[str, str]], max_pairs: int | None, mode: SubsetMode = "first"
) -> list[tuple[str, str]]:
    """At most ``max_pairs`` pairs: the first ones, or ones evenly spaced over the list (deterministic)."""
    if max_pairs is None or max_pairs >= len(pairs):
        return list(pairs)
    assert max_pairs > 0 and mode in ("first", "even"), (max_pairs, mode)
    if mode == "first":
        return list(pairs[:max_pairs])
    indices = np.linspace(0, len(pairs), max_pairs, endpoint=False).astype(int)
    return [pairs[i] for i in indices]


def read_split(
    root: str | Path, layout: DatasetLayout, split: str, max_pairs: int | None = None, subset: SubsetMode = "first"
) -> SplitContents:
    """Read and check a split's CSV files (cheap: no image is opened).

    Checks: both files parse, coordinates are -1 or inside the image, the split has pairs and every
    paired image is annotated. ``max_pairs`` / ``subset`` then select the pairs to keep.
    """
    assert layout.height is not None and layout.width is not None, "build the layout with make_layout"
    annotation_path = layout.annotation_path(root, split)
    pairs_path = layout.pairs_path(root, split)
    annotations = read_annotations(annotation_path)
    pairs = read_pairs(pairs_path)
    _check_keypoints(annotations, annotation_path, layout.height, layout.width)
    if not pairs:
        raise DataError(
            f"{pairs_path} lists no pairs, so the '{split}' split is empty. Build pairs with "
            "`emca data pairs ANNOTATIONS.csv --out PAIRS.csv --person-id RULE`."
        )
    _check_pairs(pairs, annotations, pairs_path, annotation_path)
    return SplitContents(split, layout.image_dir_path(root, split), annotations, select_pairs(pairs, max_pairs, subset))


def _first_use(pairs_path: Path, name: str) -> int | str:
    return _line_of(pairs_path, lambda line: name in (field.strip() for field in line.split(",")))


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image's header alone (PIL opens lazily)."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(f"Cannot open image '{path}': {err}. The file is not an image, or is corrupt.") from err


def _decode_image(path: Path) -> torch.Tensor:
    """Fully decode an image file (where truncation shows up) to a (3, H, W) float tensor in [0, 1]."""
    try:
        return torch.from_numpy(read_image(path)).permute(2, 0, 1).contiguous()
    except ImageFailure as err:
        if not isinstance(err.__cause__, (OSError, UnidentifiedImageError, SyntaxError)):
            raise
        raise DataError(
            f"Cannot decode image '{path}': {err.__cause__}. The file is missing, truncated or corrupt; re-extract "
            "or re-download it."
        ) from err


def check_images(
    image_dir: Path,
    names: Iterable[str],
    height: int,
    width: int,
    needed_by: Path,
    progress: bool = True,
    decode: bool = False,
) -> None:
    """Every image exists, can be read and is ``height`` x ``width``.

    Without ``decode`` only the header is read (PIL's lazy open), so checking 100k images takes seconds,
    but a truncated or corrupt body is only found when the image is loaded. ``decode`` decodes every image
    fully. ``progress`` shows a bar once the check takes a while. ``needed_by`` is the pairs file that uses
    the images, named in the error.
    """
    names = list(names)
    if not image_dir.is_dir():
        problem = "is a file, not a folder" if image_dir.exists() else "does not exist"
        raise DataError(f"Image folder '{image_dir}' {problem}; {needed_by} needs {len(names)} images from it.")
    missing: list[str] = []
    directories: list[str] = []
    unreadable: list[tuple[str, DataError]] = []
    wrong_size: list[tuple[str, tuple[int, int]]] = []
    action = "Decoding" if decode else "Checking"
    bar = tqdm(names, desc=f"{action} images in {image_dir}", unit="img", disable=not progress, delay=_PROGRESS_DELAY_S)
    for name in bar:
        path = image_dir / name
        if path.is_dir():
            directories.append(name)
            continue
        if not path.is_file():
            missing.append(name)
            continue
        try:
            if decode:
                _, decoded_height, decoded_width = _decode_image(path).shape
                size = (decoded_width, decoded_height)
            else:
                size = _header_size(path)
        except DataError as err:
            unreadable.append((name, err))
            continue
        if size != (width, height):
            wrong_size.append((name, size))
    if missing:
        raise DataError(
            f"{len(missing)} image(s) used by {needed_by} are missing from '{image_dir}': {_listed(missing)} "
            f"(the first is used on line {_first_use(needed_by, missing[0])})."
        )
    if directories:
        raise DataError(
            f"{len(directories)} image(s) used by {needed_by} are directories in '{image_dir}', where image "
            f"files were expected: {_listed(directories)} (the first is used on line "
            f"{_first_use(needed_by, directories[0])})."
        )
    if unreadable:
        raise DataError(
            f"{len(unreadable)} image(s) in '{image_dir}' cannot be read as images: "
            f"{_listed([name for name, _ in unreadable])}. The first: {unreadable[0][1]}"
        )
    if wrong_size:
        name, (found_width, found_height) = wrong_size[0]
        raise DataError(
            f"Image '{image_dir / name}' is {found_height}x{found_width} (HxW) but the dataset expects "
            f"{height}x{width} ({len(wrong_size)} image(s) differ: {_listed([n for n, _ in wrong_size])}). "
            "Convert a raw release with `emca data prepare deepfashion|market RAW OUT`, or set "
            "data.height / data.width to your images' size."
        )


def validate_split(
    root: str | Path,
    layout: DatasetLayout,
    split: str,
    max_pairs: int | None = None,
    subset: SubsetMode = "first",
    progress: bool = True,
    decode: bool = False,
) -> SplitContents:
    """:func:`read_split` plus :func:`check_images` (header only, or full ``decode``) on every image used."""
    contents = read_split(root, layout, split, max_pairs, subset)
    check_images(
        contents.image_dir,
        contents.image_names,
        layout.height,
        layout.width,
        layout.pairs_path(root, split),
        progress,
        decode,
    )
    return contents


def load_image(path: Path, height: int, width: int) -> torch.Tensor:
    """Decode an image file to a (3, H, W) float tensor in [-1, 1]; a bad file raises DataError.

    8-bit images are scaled from 0..255, 16-bit grayscale ones from 0..65535.
    """
    pixels = _decode_image(path)
    _, found_height, found_width = pixels.shape
    if (found_height, found_width) != (height, width):
        raise DataError(f"Image '{path}' is {found_height}x{found_width} (HxW); expected {height}x{width}.")
    return pixels * 2.0 - 1.0


# decoded images and pose maps of a split are kept when they fit in this much memory (per loader process):
# every image is in several pairs (the synthetic set: 10), so each is decoded and rendered once, not per pair
IMAGE_CACHE_BUDGET_BYTES = 256 * 2**20


class PoseTransferDataset(Dataset):
    """(source, target) pairs of one split; pose maps are rendered on the fly, once per image (and per flip)
    where a split's decoded images and maps fit in ``IMAGE_CACHE_BUDGET_BYTES``.

    Each item is a dict:
      ``source_image``, ``target_image``: (3, H, W) float32 in [-1, 1];
      ``source_pose``, ``target_pose``: (18, H, W) float32 Gaussian maps (sigma ``sigma`` px);
      ``source_keypoints``, ``target_keypoints``: (18, 2) int64 (row, col), -1 for a missing joint;
      ``source_name``, ``target_name``: the image file names.
    With probability ``flip_probability`` both images and both keypoint sets are mirrored together.
    ``validate`` runs :func:`validate_split` (image headers only) on construction, else :func:`read_split`.
    """

    def __init__(
        self,
        root: str | Path,
        layout: DatasetLayout,
        split: str,
        sigma: float = DEFAULT_SIGMA,
        flip_probability: float = 0.0,
        max_pairs: int | None = None,
        subset: SubsetMode = "first",
        validate: bool = True,
        progress: bool = True,
    ) -> None:
        assert sigma > 0 and 0.0 <= flip_probability <= 1.0, (sigma, flip_probability)
        if validate:
            contents = validate_split(root, layout, split, max_pairs, subset, progress)
        else:
            contents = read_split(root, layout, split, max_pairs, subset)
        self.layout = layout
        self.split = split
        self.image_dir = contents.image_dir
        self.annotations = contents.annotations
        self.pairs = contents.pairs
        self.height: int = layout.height
        self.width: int = layout.width
        self.sigma = sigma
        self.flip_probability = flip_probability
        self._cache = self._new_cache()

    def __len__(self) -> int:
        return len(self.pairs)

    def _new_cache(self) -> dict[tuple[str, bool, float], tuple[torch.Tensor, torch.Tensor, np.ndarray]] | None:
        """An empty per-image cache if the split's decoded images and pose maps fit in the budget, else None."""
        per_image = (IMAGE_CHANNELS + NUM_JOINTS) * self.height * self.width * 4 * (2 if self.flip_probability else 1)
        return {} if per_image * len(self.annotations) <= IMAGE_CACHE_BUDGET_BYTES else None

    def _image_and_pose(self, name: str, flipped: bool) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(image (3, H, W), pose maps (18, H, W), keypoints (18, 2)) of image ``name``, mirrored if ``flipped``."""
        key = name, flipped, self.sigma  # a subject's sigma is set after construction
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        image = load_image(self.image_dir / name, self.height, self.width)
        keypoints = self.annotations[name]
        if flipped:
            image, keypoints = image.flip(-1), flip_keypoints(keypoints, self.width)
        entry = image, pose_heatmaps(keypoints, self.height, self.width, self.sigma), keypoints
        if self._cache is not None:
            self._cache[key] = entry
        return entry

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        source_name, target_name = self.pairs[index]
        # one draw per pair, as before the cache: both images are mirrored together
        flipped = self.flip_probability > 0 and torch.rand(()).item() < self.flip_probability
        source_image, source_pose, source_keypoints = self._image_and_pose(source_name, flipped)
        target_image, target_pose, target_keypoints = self._image_and_pose(target_name, flipped)
        return {
            "source_image": source_image,
            "source_pose": source_pose,
            "target_image": target_image,
            "target_pose": target_pose,
            "source_keypoints": torch.as_tensor(source_keypoints, dtype=torch.int64),
            "target_keypoints": torch.as_tensor(target_keypoints, dtype=torch.int64),
            "source_name": source_name,
            "target_name": target_name,
        }
