"""What to build and under which rules: the preset's :class:`Target`, :class:`FromVideoOptions` (with their checks),
and the imports of the optional dependencies (OpenCV, supervision) with an EmcaError saying how to install them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from types import ModuleType

from emca.data.dataset import DatasetLayout, make_layout
from emca.errors import ConfigError, EmcaError

# preset name -> (file names of this layout preset, height, width); "HxW" uses Market's file names
PRESET_SIZES: dict[str, tuple[int, int]] = {"market": (128, 64), "deepfashion": (256, 176)}
CUSTOM_LAYOUT = "market"
MIN_SIZE = 16
SPLITS = ("identity", "time")


def import_cv2() -> ModuleType:
    """OpenCV, or an EmcaError saying how to install it (it comes with the pose extra, through MediaPipe)."""
    try:
        import cv2
    except ImportError as err:
        raise EmcaError(
            f"Building a dataset from videos needs OpenCV, which cannot be imported ({err}). Install it with "
            "pip install 'emca[pose]'."
        ) from err
    return cv2


def import_supervision() -> ModuleType:
    """``supervision`` (for its ByteTrack), or an EmcaError saying how to install a version that has it."""
    try:
        import supervision
    except ImportError as err:
        raise EmcaError(
            f"Building a dataset from videos needs supervision (its ByteTrack tracker), which cannot be imported "
            f"({err}). Install it with pip install 'emca[pose]'."
        ) from err
    if not hasattr(supervision, "ByteTrack"):
        raise EmcaError(
            f"supervision {getattr(supervision, '__version__', '?')} has no ByteTrack (it was removed in 0.31). "
            "Install the supported version with pip install 'emca[pose]'."
        )
    return supervision


@dataclass(frozen=True)
class Target:
    """The crops to make: ``height`` x ``width``, in the file layout of ``layout_preset``."""

    label: str  # as given: market, deepfashion or HxW
    layout_preset: str
    height: int
    width: int

    def layout(self) -> DatasetLayout:
        return make_layout(self.layout_preset, self.height, self.width)


def parse_preset(text: str) -> Target:
    """``market`` (128x64), ``deepfashion`` (256x176) or ``HxW`` (e.g. ``160x80``, Market's file names)."""
    if text in PRESET_SIZES:
        return Target(text, text, *PRESET_SIZES[text])
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if match is None:
        raise ConfigError(
            f"--preset: expected market, deepfashion or HEIGHTxWIDTH in pixels (e.g. 160x80), got {text!r}."
        )
    height, width = int(match.group(1)), int(match.group(2))
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ConfigError(f"--preset: both sides must be at least {MIN_SIZE} px, got {height}x{width}.")
    return Target(f"{height}x{width}", CUSTOM_LAYOUT, height, width)


@dataclass(frozen=True)
class FromVideoOptions:
    """The rules of :func:`build_from_videos`; the command-line flag of each is its name with dashes.

    Frames and gaps count the video's own frames (not only the ones read); sizes are relative to the box or crop.
    """

    every: int = 1  # read every k-th frame
    min_gap: int = 10  # frames between two kept crops of one identity
    split: str = "identity"  # identity | time
    test_fraction: float = 0.2  # of the identities (identity split) or of each identity's crops (time split)
    min_pose_difference: float = 0.05  # mean joint distance of a pair, in crop heights
    min_keypoint_confidence: float = 0.5  # MediaPipe visibility: per joint, and the limbs' mean per crop
    margin: float = 0.1  # around the box, in box heights (widths) on each side
    max_overlap: float = 0.1  # box IoU with another person
    max_upscale: float = 1.5  # how much a crop may be enlarged to the preset's size
    edge_tolerance: int = 2  # px: a box this close to the frame border is cut off
    max_colour_distance: float = 18.0  # CIE76 delta E of the torso or thighs to the identity's running colours
    max_jump: float = 0.5  # box heights a box may move between two observations, plus max_speed * seconds
    max_speed: float = 1.5  # box heights per second
    max_size_change: float = 1.5  # ratio of box heights between two observations
    colour_update: float = 0.3  # weight of each kept crop's colours in its identity's running colours

    def check(self) -> None:
        """ConfigError naming the flag of the first invalid value."""

        def flag(name: str) -> str:
            return "--" + name.replace("_", "-")

        def whole(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{flag(name)}: expected a whole number of at least {minimum}, got {value!r}.")

        def number(name: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
            value = getattr(self, name)
            valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            valid = (
                valid and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
            )
            if not valid:
                bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
                raise ConfigError(f"{flag(name)}: expected a number in {bounds}, got {value!r}.")

        whole("every", 1)
        whole("min_gap", 0)
        whole("edge_tolerance", 0)
        if self.split not in SPLITS:
            raise ConfigError(f"--split: expected one of {', '.join(SPLITS)}, got {self.split!r}.")
        number("test_fraction", 0.0, 1.0, low_open=True, high_open=True)
        number("min_pose_difference", 0.0, math.inf, high_open=True)
        number("min_keypoint_confidence", 0.0, 1.0)
        number("margin", 0.0, 2.0)
        number("max_overlap", 0.0, 1.0)
        number("max_upscale", 1.0, math.inf, high_open=True)
        number("max_colour_distance", 0.0, math.inf, low_open=True)
        number("max_jump", 0.0, math.inf, high_open=True)
        number("max_speed", 0.0, math.inf, high_open=True)
        number("max_size_change", 1.0, math.inf, high_open=True)
        number("colour_update", 0.0, 1.0)
