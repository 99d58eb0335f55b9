"""Pose transfer on users' own photos.

One person to one pose::

    emca infer ckpt=RUN/checkpoints/best.ckpt source=photo.jpg target=pose.json out=result.png
    emca infer ckpt=... source=photo.jpg target=other_photo.jpg out=result.png sheet=sheet.png

A batch from a pairs CSV (``from,to`` photo names in ``images``; keypoints from an annotation CSV such as
``emca pose extract`` writes, in the photos' own frames)::

    emca infer ckpt=... pairs=pairs.csv images=photos/ annotations=annotations.csv out=results/

With a Mixture-of-Attention adapter trained on one subject (``emca train experiment=personalize``),
``adapter=RUN/adapter.pt`` applies it on top of ``ckpt`` (its base checkpoint); ``adapter_scale`` in
[0, 1] scales the personalised routing (0: the base generator exactly, 1: as trained).

Keypoints of a photo come from MediaPipe (the ``pose`` extra) unless given: ``source_pose=`` (JSON) or
the batch's annotation CSV. A pose JSON is OpenPose output (``people[0].pose_keypoints_2d``), or
``{"keypoints": [[x, y], ...18], "height": H, "width": W}`` / a bare list of 18 ``[x, y]`` (x first, as
OpenPose; ``null`` or negative for missing). Coordinates are pixels in the frame of the photo they were detected
on: ``height``/``width`` (both or neither) name it; without them a ``source_pose`` is in the source photo's frame
and a target pose in the model's. Photos and poses are fitted to the model's resolution by
:func:`emca.pose.framing.fit_to_model` (``framing=pad|crop``).

A model file is checked before it is built: every tensor finite, a generator of at most ``max_parameters``
parameters (default 500,000,000, about 10x the official XingGAN) whose largest tensor for one image at its size
is at most ``max_activation_gib`` GiB (default 8), both counted on the meta device.

Every input is checked before any result is written; a bad one ends with one message naming the file, line
or field (``out`` and ``sheet`` must end in an image suffix such as ``.png``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from emca.checkpoint import LoadLimits
from emca.cli import key_value_arguments, key_value_options, resolve_device, user_errors
from emca.data.annotations import read_annotations, read_pairs
from emca.data.keypoints import JOINT_NAMES, MISSING, NUM_JOINTS, REQUIRED_FOR_PAIRS, visible
from emca.data.openpose import openpose_keypoints, read_json
from emca.data.photo import image_size, read_image_uint8
from emca.errors import ConfigError, DataError, EmcaError
from emca.io import atomic_save_image
from emca.metrics.images import DEFAULT_NAME_PATTERN, pair_file_name
from emca.options import bounded
from emca.pipeline import PoseTransferPipeline
from emca.pose.extract import IMAGE_SUFFIXES, PoseExtractor
from emca.pose.framing import FIT_MODES, fit_to_model, plan_framing, transform_keypoints
from emca.visualize import pose_transfer_sheet


@dataclass(frozen=True)
class InferOptions:
    """``emca infer``'s key=value options (see the module docstring)."""

    ckpt: str | None = bounded(None, kind=str)
    adapter: str | None = bounded(None, kind=str)
    adapter_scale: float = bounded(1.0, minimum=0, maximum=1)
    source: str | None = bounded(None, kind=str)
    source_pose: str | None = bounded(None, kind=str)
    target: str | None = bounded(None, kind=str)
    out: str | None = bounded(None, kind=str)
    sheet: str | None = bounded(None, kind=str)
    pairs: str | None = bounded(None, kind=str)
    images: str | None = bounded(None, kind=str)
    annotations: str | None = bounded(None, kind=str)
    framing: str = bounded("pad", choices=FIT_MODES)
    device: str = "auto"
    min_visibility: float = bounded(0.5, minimum=0, maximum=1)
    max_parameters: int = bounded(LoadLimits.max_parameters, minimum=1)
    max_activation_gib: float = bounded(LoadLimits.max_activation_gib, exclusive_minimum=0)

    @classmethod
    def for_transfer(cls, options: Any, **given: Any) -> InferOptions:
        """The options of another command (``emca demo``'s, ``emca animate``'s) that load and frame the model,
        as a :class:`Transfer` takes them; ``given`` sets the rest (the source photo and its keypoints)."""
        shared = {name: getattr(options, name) for name in TRANSFER_FIELDS if hasattr(options, name)}
        return cls(**shared, **given)


# the options of loading the model and framing photos, which emca infer, emca demo and emca animate share
TRANSFER_FIELDS = (
    "ckpt", "adapter", "adapter_scale", "framing", "device", "min_visibility", "max_parameters", "max_activation_gib",
)  # fmt: skip


@dataclass
class Pose:
    """Keypoints (18, 2) (row, col) in a frame of ``size`` (H, W)."""

    keypoints: np.ndarray
    size: tuple[int, int]


def _frame_size(content: Any, path: Path, default_size: tuple[int, int]) -> tuple[tuple[int, int], bool]:
    """The (height, width) a pose JSON names, or ``default_size``; and whether the file named it."""
    fields = ("height", "width")
    given = [field for field in fields if isinstance(content, dict) and field in content]
    if not given:
        return default_size, False
    if len(given) == 1:
        raise DataError(
            f"Pose JSON '{path}' gives '{given[0]}' but not '{next(f for f in fields if f not in given)}': give "
            "both (the size in pixels of the photo the pose was detected on) or neither."
        )
    size = []
    for field in fields:
        value = content[field]
        if isinstance(value, float) and value.is_integer():  # some tools write sizes as 96.0
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise DataError(
                f"Pose JSON '{path}', field '{field}': expected the photo's {field} in pixels as a positive whole "
                f"number, got {value!r}."
            )
        size.append(value)
    return (size[0], size[1]), True


def _finite_number(value: Any) -> float | None:
    """A JSON number (not a bool) as a float if finite; None otherwise (NaN, Infinity, 1e400, a string...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer with hundreds of digits
        return None
    return number if math.isfinite(number) else None


def _listed_points(content: Any, path: Path) -> np.ndarray:
    """(18, 2) float (row, col) of the ``[x, y]`` list format; MISSING for null or negative points."""
    points = content.get("keypoints") if isinstance(content, dict) else content
    if not isinstance(points, list) or len(points) != NUM_JOINTS:
        raise DataError(f"Pose JSON '{path}': expected {NUM_JOINTS} [x, y] points (COCO-18 order) or OpenPose JSON.")
    rows_cols = np.full((NUM_JOINTS, 2), MISSING, dtype=np.float64)
    for joint, point in enumerate(points):
        if point is None:
            continue
        xy = [_finite_number(v) for v in point[:2]] if isinstance(point, list) else []
        if len(xy) != 2 or None in xy:
            raise DataError(
                f"Pose JSON '{path}', joint {joint} ({JOINT_NAMES[joint]}): expected [x, y] with coordinates that are "
                f"finite numbers (null or a negative coordinate for a missing joint), got {point!r}."
            )
        x, y = xy
        if x >= 0 and y >= 0:
            rows_cols[joint] = (y, x)
    return rows_cols


def _pixels_in_frame(rows_cols: np.ndarray, path: Path, size: tuple[int, int], size_given: bool) -> np.ndarray:
    """Float (row, col) points (MISSING where absent) -> int64 pixels; DataError for one outside the frame."""
    pixels = np.rint(rows_cols)
    outside = (pixels >= 0).all(axis=1) & ((pixels[:, 0] >= size[0]) | (pixels[:, 1] >= size[1]))
    if outside.any():
        joint = int(np.argmax(outside))
        frame = (
            "that the file gives"
            if size_given
            else "assumed because the file gives no 'height' and 'width' (add those of the photo it was detected on)"
        )
        raise DataError(
            f"Pose JSON '{path}', joint {joint} ({JOINT_NAMES[joint]}): x={rows_cols[joint, 1]:g}, "
            f"y={rows_cols[joint, 0]:g} lies outside the {size[0]}x{size[1]} (height x width) frame {frame}. "
            f"Coordinates are pixels, x in 0..{size[1] - 1} and y in 0..{size[0] - 1} (null or negative for a "
            "missing joint)."
        )
    return pixels.astype(np.int64)


def read_pose_json(path: Path, default_size: tuple[int, int]) -> Pose:
    """A pose JSON (see the module docstring) -> keypoints in the frame it names (``default_size`` if none)."""
    content = read_json(path, "pose JSON")
    size, size_given = _frame_size(content, path, default_size)
    if isinstance(content, dict) and "people" in content:
        keypoints = openpose_keypoints(content, path)
        if keypoints is None:
            raise DataError(f"Pose JSON '{path}' lists no person.")
        rows_cols = keypoints.astype(np.float64)
    else:
        rows_cols = _listed_points(content, path)
    return Pose(_pixels_in_frame(rows_cols, path, size, size_given), size)


PhotoRole = Literal["source", "target"]
# how to give a photo's keypoints instead of detecting them, for each role in the command
GIVE_KEYPOINTS: dict[PhotoRole, str] = {
    "source": "give the source photo's keypoints as a pose JSON with source_pose=POSE.json",
    "target": "give the target as a pose JSON (target=POSE.json) instead of a photo",
}


def require_joints(keypoints: np.ndarray, what: str) -> None:
    """The model needs both shoulders and hips (the rule its training pairs were built with)."""
    missing = [JOINT_NAMES[j] for j in REQUIRED_FOR_PAIRS if not visible(keypoints)[j]]
    if missing:
        raise DataError(
            f"{what}: the joints {', '.join(missing)} are missing (or outside the frame); the model "
            "needs both shoulders and both hips. Use a photo or pose showing the whole torso."
        )


class Transfer:
    """A :class:`~emca.pipeline.PoseTransferPipeline` plus what turns photos and pose files into its inputs:
    detection, framing to the model's size, the joints the model needs."""

    def __init__(self, options: InferOptions) -> None:
        self.options = options
        self.pipeline = PoseTransferPipeline.from_pretrained(
            options.ckpt,
            options.adapter,
            options.adapter_scale,
            options.device,
            LoadLimits(options.max_parameters, options.max_activation_gib),  # checked by parse_options
        )
        self.size = self.pipeline.size
        self._extractor: PoseExtractor | None = None

    def detect(self, photo: np.ndarray, path: Path, role: PhotoRole = "source") -> np.ndarray:
        """MediaPipe's keypoints of the one person in ``photo`` (read from ``path``, the ``role`` photo)."""
        try:
            if self._extractor is None:
                self._extractor = PoseExtractor(self.options.min_visibility)
            return self._extractor(photo)
        except EmcaError as err:  # no person, several people, no MediaPipe: name the photo and the way around
            raise DataError(f"'{path}': {err} To skip detection, {GIVE_KEYPOINTS[role]}.") from err

    def framed_source(self, path: Path, keypoints: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        photo = read_image_uint8(path)
        keypoints = self.detect(photo, path) if keypoints is None else keypoints
        image, framed, _ = fit_to_model(photo, keypoints, *self.size, mode=self.options.framing)
        require_joints(framed, f"source '{path}'")
        return image, framed

    def framed_pose(self, pose: Pose, what: str) -> np.ndarray:
        framing = plan_framing(pose.size, pose.keypoints, *self.size, mode=self.options.framing)
        framed = transform_keypoints(pose.keypoints, framing)
        require_joints(framed, what)
        return framed

    def target_pose(self, path: Path) -> np.ndarray:
        if path.suffix.lower() == ".json":
            return self.framed_pose(read_pose_json(path, self.size), f"target pose '{path}'")
        photo = read_image_uint8(path)
        return self.framed_pose(Pose(self.detect(photo, path, "target"), photo.shape[:2]), f"target photo '{path}'")

    def __call__(
        self, image: np.ndarray, source_keypoints: np.ndarray, target_keypoints: np.ndarray
    ) -> tuple[torch.Tensor, Image.Image, torch.Tensor]:
        """Generate; returns the source (1, 3, H, W) in [-1, 1], the result as PIL and as a tensor."""
        source = self.pipeline.from_uint8(image)[None]
        generated = self.pipeline(source, source_keypoints[None], target_keypoints[None])
        return source, self.pipeline.to_pil(generated)[0], generated

    def sheet(
        self, source: torch.Tensor, source_keypoints: np.ndarray, target_keypoints: np.ndarray, generated: torch.Tensor
    ) -> Image.Image:
        return pose_transfer_sheet(
            source, torch.from_numpy(source_keypoints)[None], torch.from_numpy(target_keypoints)[None], generated
        )


def source_keypoints(options: InferOptions) -> np.ndarray | None:
    """The keypoints of ``source_pose``, checked to be in the source photo's frame; None to detect them."""
    if not options.source_pose:
        return None
    source, pose_path = Path(options.source), Path(options.source_pose)
    photo_size = image_size(source)
    pose = read_pose_json(pose_path, photo_size)
    if pose.size != photo_size:
        raise DataError(
            f"source_pose '{pose_path}' gives a {pose.size[0]}x{pose.size[1]} (height x width) frame, but the source "
            f"photo '{source}' is {photo_size[0]}x{photo_size[1]}: its keypoints must be in the photo's own frame."
        )
    return pose.keypoints


def run_single(transfer: Transfer, options: InferOptions) -> None:
    image, framed_source = transfer.framed_source(Path(options.source), source_keypoints(options))
    target_keypoints = transfer.target_pose(Path(options.target))
    source, result, generated = transfer(image, framed_source, target_keypoints)
    atomic_save_image(result, options.out)
    print(f"wrote {options.out}")
    if options.sheet:
        atomic_save_image(transfer.sheet(source, framed_source, target_keypoints, generated), options.sheet)
        print(f"wrote {options.sheet}")


@dataclass
class Batch:
    """A pairs CSV whose photos all exist and have keypoints."""

    pairs: list[tuple[str, str]]
    keypoints: dict[str, np.ndarray]  # of every photo, in its own frame
    target_sizes: dict[str, tuple[int, int]]  # (height, width) of every target photo


def read_batch(options: InferOptions) -> Batch:
    """Read and check the batch's files before the model is loaded, so no bad input is found halfway."""
    if not (options.images and options.annotations):
        raise ConfigError("pairs=... needs images=DIR (the photos) and annotations=CSV (their keypoints).")
    images = Path(options.images)
    if not images.is_dir():
        raise DataError(f"images={options.images}: the image folder '{images}' does not exist.")
    annotations = read_annotations(options.annotations)
    pairs = read_pairs(options.pairs)
    if not pairs:
        raise DataError(f"Pairs CSV '{options.pairs}' lists no pairs under its header 'from,to'.")
    missing = []
    for line, names in enumerate(pairs, start=2):
        for name in names:
            if name not in annotations:
                raise DataError(f"{options.pairs}, line {line}: '{name}' has no keypoints in {options.annotations}.")
            if not (images / name).is_file():
                missing.append((line, name))
    if missing:
        line, name = missing[0]
        others = f" ({len(missing)} names in the pairs CSV are missing in all)" if len(missing) > 1 else ""
        raise DataError(
            f"{options.pairs}, line {line}: the image '{name}' is not in the images folder '{images}'{others}. "
            "Every name in the pairs CSV must be a photo file in images=DIR."
        )
    target_sizes = {target: image_size(images / target) for target in {target for _, target in pairs}}
    return Batch(pairs, annotations, target_sizes)


def run_batch(transfer: Transfer, batch: Batch, options: InferOptions) -> None:
    images, out_dir = Path(options.images), Path(options.out)
    pipeline = transfer.pipeline
    progress = tqdm(total=len(batch.pairs), desc="pose transfer", unit="pair")
    for start in range(0, len(batch.pairs), pipeline.batch_size):
        chunk = batch.pairs[start : start + pipeline.batch_size]
        sources, source_points, target_points = [], [], []
        for source_name, target_name in chunk:
            image, framed_source = transfer.framed_source(images / source_name, batch.keypoints[source_name])
            target = Pose(batch.keypoints[target_name], batch.target_sizes[target_name])
            sources.append(pipeline.from_uint8(image))
            source_points.append(framed_source)
            target_points.append(transfer.framed_pose(target, f"target '{target_name}'"))
        generated = pipeline(torch.stack(sources), source_points, target_points)
        for result, (source_name, target_name) in zip(pipeline.to_pil(generated), chunk):
            atomic_save_image(result, out_dir / pair_file_name(DEFAULT_NAME_PATTERN, source_name, target_name))
        progress.update(len(chunk))
    progress.close()
    print(f"wrote {len(batch.pairs)} images to {out_dir}")


def check_image_path(field: str, value: str) -> None:
    """ConfigError unless ``value`` ends in an image suffix PIL can write: the suffix picks the format."""
    extensions = Image.registered_extensions()
    writable = [suffix for suffix in IMAGE_SUFFIXES if extensions.get(suffix) in Image.SAVE]
    if Path(value).suffix.lower() not in writable:
        raise ConfigError(
            f"{field}={value}: expected an image file name ending in one of {', '.join(writable)}, "
            "which also picks the format."
        )


def parse_options(argv: list[str]) -> InferOptions:
    options = key_value_options(InferOptions, argv, "infer")
    if not options.ckpt or not options.out:
        raise ConfigError("ckpt=CHECKPOINT and out=PATH are required.")
    resolve_device(options.device)
    if options.pairs:
        single_only = [field for field in ("source", "source_pose", "target", "sheet") if getattr(options, field)]
        if single_only:
            raise ConfigError(
                f"{', '.join(single_only)}: not used with pairs=CSV, which takes its photos from images=DIR, their "
                "keypoints from annotations=CSV and writes only the results into the folder out=DIR."
            )
        return options
    if not (options.source and options.target):
        raise ConfigError("give source=PHOTO target=POSE.json|PHOTO, or pairs=CSV images=DIR annotations=CSV.")
    check_image_path("out", options.out)
    if options.sheet:
        check_image_path("sheet", options.sheet)
    return options


def main(argv: list[str] | None = None) -> None:
    argv = key_value_arguments(argv, __doc__)
    if argv is None:
        return
    with user_errors():
        options = parse_options(argv)
        if options.pairs:
            batch = read_batch(options)
            run_batch(Transfer(options), batch, options)
        else:
            run_single(Transfer(options), options)


if __name__ == "__main__":
    main()
