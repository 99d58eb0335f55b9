"""Pose transfer on users' own photos.

One person to one pose::

    python -m emca.infer ckpt=RUN/checkpoints/best.ckpt source=photo.jpg target=pose.json out=result.png
    python -m emca.infer ckpt=... source=photo.jpg target=other_photo.jpg out=result.png sheet=sheet.png

A batch from a pairs CSV (``from,to`` photo names in ``images``; keypoints from an annotation CSV such as
``python -m emca.pose extract`` writes, in the photos' own frames)::

    python -m emca.infer ckpt=... pairs=pairs.csv images=photos/ annotations=annotations.csv out=results/

With a Mixture-of-Attention adapter trained on one subject (``python train.py experiment=personalize``),
``adapter=RUN/adapter.pt`` applies it on top of ``ckpt`` (its base checkpoint); ``adapter_scale`` in
[0, 1] scales the personalised routing (0: the base generator exactly, 1: as trained).

Keypoints of a photo come from MediaPipe (the ``pose`` extra) unless given: ``source_pose=`` (JSON) or
the batch's annotation CSV. A pose JSON is OpenPose output (``people[0].pose_keypoints_2d``), or
``{"keypoints": [[x, y], ...18], "height": H, "width": W}`` / a bare list of 18 ``[x, y]`` (x first, as
OpenPose; ``null`` or negative for missing). Coordinates are in the frame of the photo they were detected on
(``height``/``width``, or the model's frame when absent); photos and poses are fitted to the model's
resolution by :func:`emca.pose.framing.fit_to_model` (``framing=pad|crop``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image
from tqdm import tqdm

from emca.cli import user_errors
from emca.data.annotations import read_annotations, read_pairs
from emca.data.keypoints import JOINT_NAMES, MISSING, NUM_JOINTS, REQUIRED_FOR_PAIRS, pose_heatmaps, visible
from emca.data.openpose import read_openpose_json
from emca.errors import ConfigError, DataError
from emca.io import atomic_save_image
from emca.metrics.generate import to_uint8
from emca.metrics.images import DEFAULT_NAME_PATTERN, pair_file_name
from emca.personalize.adapter import load_generator_with_adapter
from emca.pose.extract import ImageFailure, PoseExtractor, read_photo
from emca.pose.framing import fit_to_model, plan_framing, transform_keypoints
from emca.visualize import pose_transfer_sheet


@dataclass
class InferOptions:
    ckpt: str | None = None
    adapter: str | None = None
    adapter_scale: float = 1.0
    source: str | None = None
    source_pose: str | None = None
    target: str | None = None
    out: str | None = None
    sheet: str | None = None
    pairs: str | None = None
    images: str | None = None
    annotations: str | None = None
    framing: str = "pad"
    device: str = "auto"
    min_visibility: float = 0.5


@dataclass
class Pose:
    """Keypoints (18, 2) (row, col) in a frame of ``size`` (H, W)."""

    keypoints: np.ndarray
    size: tuple[int, int]


def read_pose_json(path: Path, model_size: tuple[int, int]) -> Pose:
    """A pose JSON (see the module docstring) -> keypoints in the frame it names (the model's if none)."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"Cannot read pose file '{path}': {err}.") from err
    if isinstance(content, dict) and "people" in content:
        keypoints = read_openpose_json(path)
        if keypoints is None:
            raise DataError(f"Pose file '{path}' lists no person.")
        return Pose(keypoints, (int(content.get("height", model_size[0])), int(content.get("width", model_size[1]))))
    points = content.get("keypoints") if isinstance(content, dict) else content
    if not isinstance(points, list) or len(points) != NUM_JOINTS:
        raise DataError(f"Pose file '{path}': expected {NUM_JOINTS} [x, y] points (COCO-18 order) or OpenPose JSON.")
    keypoints = np.full((NUM_JOINTS, 2), MISSING, dtype=np.int64)
    for joint, point in enumerate(points):
        if point is None:
            continue
        if not (isinstance(point, list) and len(point) >= 2 and all(isinstance(v, (int, float)) for v in point[:2])):
            raise DataError(
                f"Pose file '{path}', joint {joint} ({JOINT_NAMES[joint]}): expected [x, y], got {point!r}."
            )
        if point[0] >= 0 and point[1] >= 0:
            keypoints[joint] = (round(point[1]), round(point[0]))
    size = (
        (content.get("height", model_size[0]), content.get("width", model_size[1]))
        if isinstance(content, dict)
        else model_size
    )
    return Pose(keypoints, (int(size[0]), int(size[1])))


def require_joints(keypoints: np.ndarray, what: str) -> None:
    """The model needs both shoulders and hips (the rule its training pairs were built with)."""
    missing = [JOINT_NAMES[j] for j in REQUIRED_FOR_PAIRS if not visible(keypoints)[j]]
    if missing:
        raise DataError(
            f"{what}: the joints {', '.join(missing)} are missing (or outside the frame); the model "
            "needs both shoulders and both hips. Use a photo or pose showing the whole torso."
        )


class Transfer:
    """A loaded generator plus what it needs to turn photos and poses into its inputs."""

    def __init__(self, options: InferOptions) -> None:
        if options.device == "auto":
            options.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.options = options
        self.generator, hyper_parameters = load_generator_with_adapter(
            options.ckpt, options.adapter, options.device, options.adapter_scale
        )
        data = hyper_parameters["data"]
        self.size = (int(data["height"]), int(data["width"]))
        self.sigma = float(data.get("sigma", 6.0))
        self._extractor: PoseExtractor | None = None

    def detect(self, photo: np.ndarray, path: Path) -> np.ndarray:
        if self._extractor is None:
            self._extractor = PoseExtractor(self.options.min_visibility)
        try:
            return self._extractor(photo)
        except ImageFailure as err:  # no person, several people: name the photo
            raise DataError(f"'{path}': {err}") from err

    def framed_source(self, path: Path, keypoints: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        photo = read_photo(path)
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
        photo = read_photo(path)
        return self.framed_pose(Pose(self.detect(photo, path), photo.shape[:2]), f"target photo '{path}'")

    @torch.no_grad()
    def __call__(
        self, image: np.ndarray, source_keypoints: np.ndarray, target_keypoints: np.ndarray
    ) -> tuple[torch.Tensor, Image.Image, torch.Tensor]:
        """Generate; returns the source (1, 3, H, W) in [-1, 1], the result as PIL and as a tensor."""
        device = self.options.device
        source = torch.tensor(image).permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0)
        maps = [
            pose_heatmaps(k, *self.size, sigma=self.sigma).unsqueeze(0).to(device)
            for k in (source_keypoints, target_keypoints)
        ]
        generated = self.generator(source.to(device), *maps).cpu()
        result = Image.fromarray(to_uint8(generated)[0].permute(1, 2, 0).numpy())
        return source, result, generated

    def sheet(
        self, source: torch.Tensor, source_keypoints: np.ndarray, target_keypoints: np.ndarray, generated: torch.Tensor
    ) -> Image.Image:
        return pose_transfer_sheet(
            source, torch.from_numpy(source_keypoints)[None], torch.from_numpy(target_keypoints)[None], generated
        )


def run_single(transfer: Transfer, options: InferOptions) -> None:
    source_keypoints = (
        read_pose_json(Path(options.source_pose), transfer.size).keypoints if options.source_pose else None
    )
    image, framed_source = transfer.framed_source(Path(options.source), source_keypoints)
    target_keypoints = transfer.target_pose(Path(options.target))
    source, result, generated = transfer(image, framed_source, target_keypoints)
    atomic_save_image(result, options.out)
    print(f"wrote {options.out}")
    if options.sheet:
        atomic_save_image(transfer.sheet(source, framed_source, target_keypoints, generated), options.sheet)
        print(f"wrote {options.sheet}")


def run_batch(transfer: Transfer, options: InferOptions) -> None:
    if not (options.images and options.annotations):
        raise ConfigError("pairs=... needs images=DIR (the photos) and annotations=CSV (their keypoints).")
    annotations = read_annotations(options.annotations)
    pairs = read_pairs(options.pairs)
    images, out_dir = Path(options.images), Path(options.out)
    for line, (source_name, target_name) in enumerate(pairs, start=2):
        for name in (source_name, target_name):
            if name not in annotations:
                raise DataError(f"{options.pairs}, line {line}: '{name}' has no keypoints in {options.annotations}.")
    for source_name, target_name in tqdm(pairs, desc="pose transfer", unit="pair"):
        image, framed_source = transfer.framed_source(images / source_name, annotations[source_name])
        with Image.open(images / target_name) as target_photo:
            target_size = (target_photo.height, target_photo.width)
        target_keypoints = transfer.framed_pose(Pose(annotations[target_name], target_size), f"target '{target_name}'")
        _, result, _ = transfer(image, framed_source, target_keypoints)
        atomic_save_image(result, out_dir / pair_file_name(DEFAULT_NAME_PATTERN, source_name, target_name))
    print(f"wrote {len(pairs)} images to {out_dir}")


def parse_options(argv: list[str]) -> InferOptions:
    try:
        options = OmegaConf.merge(OmegaConf.structured(InferOptions), OmegaConf.from_cli(argv))
    except OmegaConfBaseException as err:
        raise ConfigError(f"Bad argument: {err}. Arguments are key=value; see `python -m emca.infer --help`.") from err
    options = OmegaConf.to_object(options)
    if not options.ckpt or not options.out:
        raise ConfigError("ckpt=CHECKPOINT and out=PATH are required.")
    if not options.pairs and not (options.source and options.target):
        raise ConfigError("give source=PHOTO target=POSE.json|PHOTO, or pairs=CSV images=DIR annotations=CSV.")
    return options


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return
    with user_errors():
        options = parse_options(argv)
        transfer = Transfer(options)
        (run_batch if options.pairs else run_single)(transfer, options)


if __name__ == "__main__":
    main()
