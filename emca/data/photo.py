"""The one image reader of emca: dataset images for training and evaluation, and people's photos for
``emca infer``, ``emca demo`` and pose extraction.

What it does with the files people have:

- 8-bit RGB, grayscale, palette and CMYK images become RGB;
- 16-bit grayscale (PNG, TIFF) is scaled from 0..65535, not clipped to white;
- transparent pixels (RGBA, LA, a palette with transparency) are laid over white, the background of the
  datasets' photos, instead of showing whatever colour they hide;
- an animation (GIF, APNG, WebP) or an image stored rotated (an EXIF orientation other than upright) is
  refused: which frame, and which way up the keypoints are, would be a guess;
- an image over Pillow's decompression-bomb limit is refused before it is decoded;
- anything unreadable (missing, truncated, not an image) is refused naming the file.

Every refusal is an :class:`ImageFailure` (a DataError) whose ``reason`` labels it in failure reports.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from emca.errors import DataError

UNREADABLE = "unreadable"
ROTATED = "rotated by EXIF"
ANIMATED = "animated"
TOO_LARGE = "too large"
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_SIXTEEN_BIT_MAX = 65535
_WHITE = (255, 255, 255)


class ImageFailure(DataError):
    """An image emca cannot use; ``reason`` is its short label (UNREADABLE, ROTATED, ...) in failure reports."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@contextlib.contextmanager
def opened_image(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)`` with every way of failing (also while decoding inside the block) as an
    ImageFailure naming the file; over the decompression-bomb limit is refused, not only warned about."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageFailure(
            TOO_LARGE,
            f"'{path}' has more pixels than Pillow decodes safely ({err}). Shrink it (a person photo needs no "
            f"more than a few megapixels) or, if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS.",
        ) from err
    except FileNotFoundError as err:
        raise ImageFailure(UNREADABLE, f"the image '{path}' does not exist.") from err
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise ImageFailure(
            UNREADABLE, f"cannot decode '{path}': {err}. The file is truncated, corrupt or not an image."
        ) from err


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of the image at ``path`` as stored, from its header."""
    with opened_image(path) as image:
        return image.height, image.width


def _still(image: Image.Image, path: Path) -> None:
    """Refuse an animation or an image stored rotated or mirrored."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise ImageFailure(
            ANIMATED, f"'{path}' is an animation of {frames} frames; save the frame you mean as a still image (PNG)."
        )
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation != 1:
        raise ImageFailure(
            ROTATED,
            f"the EXIF orientation of '{path}' is {orientation}, so its pixels are stored rotated or mirrored; save it "
            "upright (e.g. PIL.ImageOps.exif_transpose) so keypoints and model see the same frame.",
        )


def _rgb(image: Image.Image, path: Path) -> np.ndarray:
    """The decoded pixels as (H, W, 3): uint8 for 8-bit images, float64 in [0, 1] for 16-bit grayscale."""
    if image.mode in _SIXTEEN_BIT_MODES:
        samples = np.asarray(image, dtype=np.float64)
        if samples.size and (samples.min() < 0 or samples.max() > _SIXTEEN_BIT_MAX):
            raise ImageFailure(
                UNREADABLE,
                f"Image '{path}' has 32-bit integer samples (from {samples.min():.0f} to {samples.max():.0f}); "
                "expected an 8-bit or 16-bit image. Convert it to 8-bit RGB.",
            )
        return np.repeat((samples / _SIXTEEN_BIT_MAX)[..., None], 3, axis=2)
    if image.mode == "F":
        raise ImageFailure(
            UNREADABLE,
            f"Image '{path}' has floating-point samples (PIL mode 'F'), whose range is unknown; expected an "
            "8-bit or 16-bit image. Convert it to 8-bit RGB.",
        )
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))  # forces the full decode, where truncation shows up


def _decoded(path: Path) -> np.ndarray:
    """The still image at ``path`` decoded by :func:`_rgb`."""
    with opened_image(path) as image:
        _still(image, path)
        return _rgb(image, path)


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: 8-bit images as level / 255 (torchvision's to_tensor), 16-bit grayscale as
    level / 65535."""
    pixels = _decoded(path)
    return (pixels.astype(np.float32) / 255) if pixels.dtype == np.uint8 else pixels.astype(np.float32)


def read_image_uint8(path: Path) -> np.ndarray:
    """(H, W, 3) uint8: 8-bit images as stored, 16-bit grayscale rounded to the nearest 8-bit level."""
    pixels = _decoded(path)
    return pixels if pixels.dtype == np.uint8 else np.rint(pixels * 255).astype(np.uint8)
