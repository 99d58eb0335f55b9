"""What to build and under which rules: the preset's :class:`Target`, :class:`FromVideoOptions` (with their ranges),
and the imports of the optional dependencies (OpenCV, supervision) with an EmcaError saying how to install them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

from emca.data.dataset import DatasetLayout, make_layout
from emca.errors import EmcaError
from emca.options import bounded

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
    """``market`` (128x64), ``deepfashion`` (256x176) or ``HxW`` (e.g. ``160x80``, Market's file names); any other
    text is a ValueError saying what was expected (``emca data from-video`` reports it as ``--preset``'s)."""
    if text in PRESET_SIZES:
        return Target(text, text, *PRESET_SIZES[text])
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if match is None:
        raise ValueError(f"expected market, deepfashion or HEIGHTxWIDTH in pixels (e.g. 160x80), got {text!r}.")
    height, width = int(match.group(1)), int(match.group(2))
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"both sides must be at least {MIN_SIZE} px, got {height}x{width}.")
    return Target(f"{height}x{width}", CUSTOM_LAYOUT, height, width)


@dataclass(frozen=True)
class FromVideoOptions:
    """The rules of :func:`build_from_videos`; the command-line flag of each is its name with dashes, and
    ``emca data from-video`` checks them (emca.options, with the path ``--``) where it starts.

    Frames and gaps count the video's own frames (not only the ones read); sizes are relative to the box or crop.
    """

    every: int = bounded(1, minimum=1)  # read every k-th frame
    min_gap: int = bounded(10, minimum=0)  # frames between two kept crops of one identity
    split: str = bounded("identity", choices=SPLITS)
    # of the identities (identity split) or of each identity's crops (time split)
    test_fraction: float = bounded(0.2, exclusive_minimum=0, exclusive_maximum=1)
    min_pose_difference: float = bounded(0.05, minimum=0)  # mean joint distance of a pair, in crop heights
    min_keypoint_confidence: float = bounded(0.5, minimum=0, maximum=1)  # MediaPipe visibility: per joint, limbs
    margin: float = bounded(0.1, minimum=0, maximum=2)  # around the box, in box heights (widths) on each side
    max_overlap: float = bounded(0.1, minimum=0, maximum=1)  # box IoU with another person
    max_upscale: float = bounded(1.5, minimum=1)  # how much a crop may be enlarged to the preset's size
    edge_tolerance: int = bounded(2, minimum=0)  # px: a box this close to the frame border is cut off
    # CIE76 delta E of the torso or thighs to the identity's running colours
    max_colour_distance: float = bounded(18.0, exclusive_minimum=0)
    max_jump: float = bounded(0.5, minimum=0)  # box heights a box may move between two observations, + max_speed * s
    max_speed: float = bounded(1.5, minimum=0)  # box heights per second
    max_size_change: float = bounded(1.5, minimum=1)  # ratio of box heights between two observations
    colour_update: float = bounded(0.3, minimum=0, maximum=1)  # weight of each kept crop's colours in the running ones
