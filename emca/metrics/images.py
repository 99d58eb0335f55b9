"""Generated-image files: one per test pair, named from the pair, checked before anything is scored.

JPEG files (``.jpg`` / ``.jpeg``) are accepted but reported as lossy: their compression artefacts change
FID, SSIM and LPIPS, so their scores are not comparable with those of lossless (PNG) outputs.

The default name is ``<from-stem>___<to-stem>.png`` (PATN's ``___`` separator). A pattern may use
``{from}`` / ``{to}`` (full source / target file names) and ``{from_stem}`` / ``{to_stem}`` (without
their extension), so another method's outputs can be scored where they lie, e.g.
``name_pattern='{from}___{to}_vis.png'``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from emca.data.photo import read_image_uint8
from emca.errors import DataError

DEFAULT_NAME_PATTERN = "{from_stem}___{to_stem}.png"
PLACEHOLDERS = ("from", "to", "from_stem", "to_stem")
RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
LOSSY_SUFFIXES = (".jpg", ".jpeg")
# how many names an error lists before giving the rest as a count
LISTED = 5


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images in [-1, 1] -> uint8 0..255, rounded to the nearest level."""
    return ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return shown + (f" and {len(items) - LISTED} more" if len(items) > LISTED else "")


def name_pattern_problem(pattern: str) -> str | None:
    """What is wrong with a file-name pattern, else None: it must use only the known placeholders and tell the
    source and the target apart (``emca eval`` and ``emca infer`` report it where they start)."""
    fields = {field for _, field, _, _ in string.Formatter().parse(pattern) if field is not None}
    unknown = sorted(fields - set(PLACEHOLDERS))
    if unknown:
        return f"name_pattern {pattern!r}: unknown placeholder(s) {unknown}; use {list(PLACEHOLDERS)}."
    if not fields & {"from", "from_stem"} or not fields & {"to", "to_stem"}:
        return (
            f"name_pattern {pattern!r} must contain a source ({{from}} or {{from_stem}}) and a target "
            "({to} or {to_stem}) placeholder, so that every pair gets its own file."
        )
    return None


def pair_file_name(pattern: str, source_name: str, target_name: str) -> str:
    """File name of the generated image of the pair (source_name -> target_name)."""
    return pattern.format(
        **{
            "from": source_name,
            "to": target_name,
            "from_stem": Path(source_name).stem,
            "to_stem": Path(target_name).stem,
        }
    )


def locate_generated(directory: str | Path, pairs: Sequence[tuple[str, str]], pattern: str) -> list[Path]:
    """The generated file of every pair in ``directory``; DataError naming the missing ones."""
    assert name_pattern_problem(pattern) is None, pattern
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"generated_dir '{directory}' does not exist or is not a folder.")
    paths = [directory / pair_file_name(pattern, source, target) for source, target in pairs]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(paths)} generated image(s) are missing from '{directory}': {_listed(missing)}. "
            f"Files are looked up by name_pattern={pattern!r} (placeholders {list(PLACEHOLDERS)}); pass the "
            "pattern your method uses, or generate every test pair."
        )
    return paths


def check_sizes(paths: Sequence[Path], height: int, width: int, resize: str | None) -> None:
    """Every file is a readable image of ``height`` x ``width``, unless ``resize`` allows resizing it."""
    assert resize is None or resize in RESAMPLING, resize
    wrong: list[tuple[Path, tuple[int, int]]] = []
    for path in paths:
        try:
            with Image.open(path) as image:
                size = image.size  # (width, height); only the header is read
        except (OSError, UnidentifiedImageError, SyntaxError) as err:
            raise DataError(f"Cannot read generated image '{path}': {err}.") from err
        if size != (width, height):
            wrong.append((path, size))
    if wrong and resize is None:
        path, (found_width, found_height) = wrong[0]
        raise DataError(
            f"Generated image '{path}' is {found_height}x{found_width} (HxW) but the dataset's images are "
            f"{height}x{width}; {len(wrong)} file(s) differ ({_listed([p.name for p, _ in wrong])}). Scores "
            "are only comparable at the dataset's size: generate at that size, or pass "
            "resize=bilinear|bicubic|lanczos to resize them (the report then names the method)."
        )


def read_rgb(path: Path, height: int, width: int, resize: str | None = None) -> np.ndarray:
    """Decode an image (emca.data.photo's reader) to (H, W, 3) uint8, resized with ``resize`` when its size
    differs."""
    pixels = read_image_uint8(path)
    if pixels.shape[:2] != (height, width):
        if resize is None:
            raise DataError(f"Image '{path}' is {pixels.shape[0]}x{pixels.shape[1]} (HxW); expected {height}x{width}.")
        pixels = np.asarray(Image.fromarray(pixels).resize((width, height), RESAMPLING[resize]))
    return np.array(pixels)  # a writable copy, as torch.from_numpy wants


def compression_note(paths: Sequence[Path]) -> str:
    """How the images are stored, for reports: whether (and how many) are lossy JPEG files."""
    lossy = [path.name for path in paths if path.suffix.lower() in LOSSY_SUFFIXES]
    if not lossy:
        return "no lossy (JPEG) files"
    return (
        f"LOSSY: {len(lossy)} of {len(paths)} files are JPEG ({_listed(lossy)}); compression artefacts change "
        "FID, SSIM and LPIPS, so these scores are not comparable with those of lossless (PNG) images"
    )


class ImageFiles(Dataset):
    """Image files as uint8 (3, H, W) tensors, each of ``height`` x ``width``."""

    def __init__(self, paths: Sequence[Path], height: int, width: int) -> None:
        self.paths, self.height, self.width = list(paths), height, width

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(read_rgb(self.paths[index], self.height, self.width)).permute(2, 0, 1)
