"""``emca animate``: one photo and a driving video in, a video of that person moving as the driver does out.

    emca animate ckpt=RUN/checkpoints/best.ckpt source=me.jpg driving=walk.mp4 out=me_walking.mp4
    emca animate ckpt=... source=me.jpg driving=street.avi person=2 side_by_side=true out=result.mp4

Every person of the driving video is detected and tracked; ``person=N`` picks the N-th track by the number of
frames it is seen in (0, the default: the person seen longest). Per frame, that person's keypoints are found
(MediaPipe); a frame where they are not found holds the last pose found. The keypoints are smoothed by a One
Euro filter (``min_cutoff`` in Hz, lower is smoother at rest; ``beta``, higher lags less on fast motion) and
normalised to the source's body ("Everybody Dance Now": scaled by the ratio of body heights, the feet on the
source's ground line), then generated in batches through the inference pipeline.

``trim=true`` keeps only the frames from the person's first appearance to their last.

Written, each atomically: ``out`` (the result at a viewable size: each model pixel a square, at least 256 px
tall; the driving video's frame rate, and its codec where ``out``'s container can hold it), with
``side_by_side=true`` also ``OUT_side_by_side.EXT`` (driving frame | skeleton | result), and
``OUT_report.json``: frames, frames without the person, time per frame, the pose accuracy of the generated
frames (PCKh against the normalised driving keypoints, MediaPipe re-detecting them) and their temporal
stability (mean frame-to-frame change against that of the source photo moved rigidly with the same motion).

``source_pose=JSON``, ``adapter=``, ``adapter_scale=``, ``framing=``, ``device=``, ``min_visibility=``,
``max_parameters=`` and ``max_activation_gib=`` are as for ``emca infer``. Needs the ``pose`` extra.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from emca.checkpoint import LoadLimits
from emca.cli import key_value_arguments, key_value_options, resolve_device, user_errors
from emca.data.skeleton import draw_skeleton
from emca.data.video.detect import KeypointDetector, MediaPipeKeypoints, PersonDetector, hog_people_detector
from emca.data.video.driving import Motion, person_motion, track_people
from emca.data.video.stream import CONTAINERS, VideoInfo, output_codec, probe, read_frames, write_video
from emca.errors import ConfigError, DataError
from emca.infer import InferOptions, Transfer, source_keypoints
from emca.io import atomic_write_text
from emca.metrics.pckh import ALPHA, detect_joints, pckh
from emca.options import bounded
from emca.pose.extract import PoseExtractor
from emca.pose.framing import FIT_MODES
from emca.pose.motion import (
    OneEuroFilter,
    from_keypoints,
    hold_missing_frames,
    implausible_frames,
    normalise_motion,
    to_keypoints,
)
from emca.visualize import VIEWABLE_HEIGHT, enlarged

FRAMES_PER_BATCH = 16
# a real driving video that Debian's opencv-doc package ships (pedestrians, 795 frames, 10 fps): the demo's example
EXAMPLE_VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@dataclass(frozen=True)
class AnimateOptions:
    """``emca animate``'s key=value options (see the module docstring)."""

    ckpt: str | None = bounded(None, kind=str)
    source: str | None = bounded(None, kind=str)
    driving: str | None = bounded(None, kind=str)
    out: str | None = bounded(None, kind=str)
    person: int = bounded(0, minimum=0)
    min_cutoff: float = bounded(1.0, exclusive_minimum=0)
    beta: float = bounded(0.05, minimum=0)
    side_by_side: bool = False
    trim: bool = False  # only the frames from the person's first appearance to their last
    source_pose: str | None = bounded(None, kind=str)
    adapter: str | None = bounded(None, kind=str)
    adapter_scale: float = bounded(1.0, minimum=0, maximum=1)
    framing: str = bounded("pad", choices=FIT_MODES)
    device: str = "auto"
    min_visibility: float = bounded(0.5, minimum=0, maximum=1)
    max_parameters: int = bounded(LoadLimits.max_parameters, minimum=1)
    max_activation_gib: float = bounded(LoadLimits.max_activation_gib, exclusive_minimum=0)


def parse_options(argv: list[str]) -> AnimateOptions:
    options = key_value_options(AnimateOptions, argv, "animate")
    missing = [name for name in ("ckpt", "source", "driving", "out") if not getattr(options, name)]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: required; emca animate ckpt=MODEL source=PHOTO driving=VIDEO out=OUT.mp4"
        )
    if Path(options.out).suffix.lower() not in CONTAINERS:
        raise ConfigError(f"out={options.out}: expected a video file name ending in one of {', '.join(CONTAINERS)}.")
    resolve_device(options.device)
    return options


def side_path(out: Path, name: str, suffix: str | None = None) -> Path:
    return out.with_name(f"{out.stem}_{name}{suffix or out.suffix}")


def viewable(image: np.ndarray, height: int) -> np.ndarray:
    """``image`` as :func:`emca.visualize.enlarged` shows it (at least ``height`` tall, nearest), sides made even
    for the encoder."""
    big = np.asarray(enlarged(Image.fromarray(image), height=height))
    return big[: big.shape[0] // 2 * 2, : big.shape[1] // 2 * 2]


@dataclass(frozen=True)
class Driving:
    """The chosen driving person: their normalised keypoints in the model's frame, per frame."""

    targets: np.ndarray  # (T, 18, 2) int, -1 missing
    positions: np.ndarray  # (T, 18, 2) float, the same before rounding
    found: np.ndarray  # (T,) bool: the person found with a plausible pose (the other frames hold the last)
    implausible: int  # frames whose detected pose was dropped as implausible
    boxes: list[tuple[float, float, float, float] | None]  # the person's box in each frame (None: not seen)
    first_frame: int  # the driving video's frame that the first frame is (trim=true)
    track: int
    frames_seen: int
    tracks: int


@dataclass(frozen=True)
class Detectors:
    """What finds people and joints, each built when first needed (a test stands in for them): the driving video's
    people, their joints in a crop (min_visibility -> detector), the joints of a generated frame (the same)."""

    people: Callable[[], PersonDetector] = hog_people_detector
    keypoints: Callable[[float], KeypointDetector] = MediaPipeKeypoints
    generated: Callable[[float], Callable[[np.ndarray], np.ndarray]] = PoseExtractor


DETECTORS = Detectors()  # the real ones: HOG, MediaPipe, MediaPipe


def _close(detector: object) -> None:
    close = getattr(detector, "close", None)
    if callable(close):
        close()


def driving_motion(
    options: AnimateOptions, info: VideoInfo, source: np.ndarray, size: tuple[int, int], detectors: Detectors
) -> Driving:
    """Track, pick, find the keypoints of, hold, smooth and normalise the driving person (two passes)."""
    video = info.path
    total = info.frames
    frames = tqdm(read_frames(video), total=total, desc="tracking people", unit="frame")
    tracks = track_people(frames, detectors.people(), float(info.fps))
    ranked = tracks.ranked()
    if not ranked:
        raise DataError(
            f"No person found in the driving video '{video}': the person detector found nobody it could follow. "
            "Expected people seen whole and upright, at least about 100 px tall."
        )
    if options.person >= len(ranked):
        raise ConfigError(
            f"person={options.person}: the driving video has {len(ranked)} tracked people (person=0 is the one seen "
            f"longest, in {ranked[0][1]} frames); choose 0 to {len(ranked) - 1}."
        )
    track, seen = ranked[options.person]
    boxes = [frame.get(track) for frame in tracks.boxes]
    detector = detectors.keypoints(options.min_visibility)
    frames = tqdm(read_frames(video), total=len(boxes), desc=f"keypoints of person {options.person}", unit="frame")
    try:
        motion = person_motion(frames, boxes, detector, video)
    finally:
        _close(detector)
    if not motion.found.any():
        raise DataError(
            f"Person {options.person} of '{video}' (seen in {seen} frames) never shows both shoulders and hips to "
            "the pose detector, so there is no pose to follow; try another person=."
        )
    first = 0
    if options.trim:
        seen_frames = np.flatnonzero(motion.found)
        first, last = int(seen_frames[0]), int(seen_frames[-1]) + 1
        motion = Motion(motion.positions[first:last], motion.found[first:last])
        boxes = boxes[first:last]
    implausible = implausible_frames(motion.positions, motion.found)
    found = motion.found & ~implausible
    held = hold_missing_frames(motion.positions, found)
    smoothed = OneEuroFilter(float(info.fps), options.min_cutoff, options.beta)(held)
    try:
        normalised = normalise_motion(smoothed, from_keypoints(source))
    except ValueError as err:
        raise DataError(f"Cannot fit the driving motion to the source photo '{options.source}': {err}.") from err
    return Driving(to_keypoints(normalised, *size), normalised, found, int(implausible.sum()), boxes, first, track,
                   seen, len(ranked))  # fmt: skip


def rigid_copies(image: np.ndarray, motion: np.ndarray) -> Iterator[np.ndarray]:
    """The source ``image`` moved with ``motion`` as a rigid body: each frame translated by the shift of the
    motion's centre (mean of its joints) and scaled by the change of its spread since the first frame."""
    centre0 = np.nanmean(motion[0], axis=0)
    spread0 = np.nanmean(np.linalg.norm(motion[0] - centre0, axis=-1))
    picture = Image.fromarray(image)
    for positions in motion:
        centre = np.nanmean(positions, axis=0)
        scale = np.nanmean(np.linalg.norm(positions - centre, axis=-1)) / spread0
        # output pixel (x, y) <- input (x0 + (x - cx) / s, y0 + (y - cy) / s)
        a = 1 / scale
        coefficients = (a, 0, centre0[1] - a * centre[1], 0, a, centre0[0] - a * centre[0])
        yield np.asarray(picture.transform(picture.size, Image.AFFINE, coefficients, Image.BILINEAR, fillcolor="white"))


def mean_change(frames: Iterator[np.ndarray] | list[np.ndarray]) -> float:
    """Mean absolute change of a pixel from one frame to the next, in [0, 1] units."""
    changes, previous = [], None
    for frame in frames:
        current = frame.astype(np.float64) / 255.0
        if previous is not None:
            changes.append(np.abs(current - previous).mean())
        previous = current
    return float(np.mean(changes)) if changes else 0.0


def pose_accuracy(
    results: list[np.ndarray], driving: Driving, min_visibility: float, detectors: Detectors
) -> dict[str, Any]:
    """PCKh of the generated frames: the pose detector re-finds their joints (on the frames enlarged to 256 px)."""
    extractor = detectors.generated(min_visibility)
    try:
        detected = np.stack([detect_joints(extractor, frame, VIEWABLE_HEIGHT)
                             for frame in tqdm(results, desc="pose accuracy", unit="frame")])  # fmt: skip
    finally:
        _close(extractor)
    undetected = int(np.isnan(detected).all(axis=(1, 2)).sum())
    score = pckh(detected, from_keypoints(driving.targets))
    return {
        "pckh": score.score,
        "alpha": ALPHA,
        "joints_scored": score.joints,
        "frames_scored": score.poses,
        "frames_where_mediapipe_found_nobody": undetected,
    }


def animate(options: AnimateOptions, detectors: Detectors = DETECTORS) -> dict[str, Any]:
    """Run ``emca animate``; returns the report."""
    started = time.perf_counter()
    out, driving_path = Path(options.out), Path(options.driving)
    info = probe(driving_path)  # an unreadable video stops here, before any work or output
    transfer = Transfer(InferOptions.for_transfer(options, source=options.source, source_pose=options.source_pose))
    image, source = transfer.framed_source(Path(options.source), source_keypoints(transfer.options))
    driving = driving_motion(options, info, source, transfer.size, detectors)
    pipeline = transfer.pipeline
    source_tensor = pipeline.from_uint8(image)[None]
    results: list[np.ndarray] = []
    generating = time.perf_counter()
    for start in tqdm(range(0, len(driving.targets), FRAMES_PER_BATCH), desc="generating", unit="batch"):
        targets = driving.targets[start : start + FRAMES_PER_BATCH]
        batch = source_tensor.expand(len(targets), -1, -1, -1)
        generated = pipeline(batch, np.repeat(source[None], len(targets), axis=0), targets)
        results.extend(np.asarray(picture) for picture in pipeline.to_pil(generated))
    generation_seconds = time.perf_counter() - generating
    codec = output_codec(out, info.codec, info.fps)
    write_video(out, (viewable(frame, VIEWABLE_HEIGHT) for frame in results), info.fps, codec)
    written = [str(out)]
    if options.side_by_side:
        side = side_path(out, "side_by_side")
        write_video(side, side_by_side(driving_path, driving, results), info.fps, codec)
        written.append(str(side))
    report = {
        "source": options.source,
        "driving": {
            "video": str(driving_path),
            "fps": str(info.fps),
            "codec": info.codec,
            "height": info.height,
            "width": info.width,
        },  # fmt: skip
        "output": {
            "video": str(out),
            "codec": codec,
            "fps": str(info.fps),
            "frames": len(results),
            "model_size": list(transfer.size),
        },  # fmt: skip
        "person": {
            "index": options.person,
            "track": driving.track,
            "frames_seen": driving.frames_seen,
            "tracked_people": driving.tracks,
        },  # fmt: skip
        "frames": len(results),
        "first_frame": driving.first_frame,
        "frames_without_person": int((~driving.found).sum()) - driving.implausible,
        "frames_with_implausible_pose": driving.implausible,
        "smoothing": {"filter": "one euro", "min_cutoff": options.min_cutoff, "beta": options.beta},
        "seconds_per_frame": {"generation": generation_seconds / len(results)},
        "pose_accuracy": pose_accuracy(results, driving, options.min_visibility, detectors),
        "temporal_stability": {
            "result_mean_change": mean_change(results),
            "rigid_copy_mean_change": mean_change(rigid_copies(image, driving.positions)),
            "note": "mean |frame t - frame t-1| in [0, 1] units: the result against the source photo moved rigidly "
            "with the driving person's centre and size (lower jitter is better)",
        },
    }
    report["seconds_per_frame"]["total"] = (time.perf_counter() - started) / len(results)
    report_path = side_path(out, "report", ".json")
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {', '.join(written)} ({len(results)} frames, {report['frames_without_person']} without the person, "
          f"{driving.implausible} with an implausible pose) "
          f"and {report_path}")  # fmt: skip
    return report


def side_by_side(video: Path, driving: Driving, results: list[np.ndarray]) -> Iterator[np.ndarray]:
    """driving frame (the followed person boxed in red) | skeleton | result per frame, each at least
    VIEWABLE_HEIGHT tall (the frame resized to the pictures' height)."""
    driving_frames = itertools.islice(read_frames(video), driving.first_frame, None)
    frames = zip(driving_frames, driving.targets, results, driving.boxes, strict=False)
    for frame, targets, result, box in frames:
        picture = viewable(result, VIEWABLE_HEIGHT)
        height = picture.shape[0]
        skeleton = viewable(draw_skeleton(targets, *result.shape[:2]), VIEWABLE_HEIGHT)
        shown = Image.fromarray(frame)
        if box is not None:
            ImageDraw.Draw(shown).rectangle(box, outline=(255, 0, 0), width=max(2, frame.shape[0] // 200))
        width = round(frame.shape[1] * height / frame.shape[0]) // 2 * 2
        shown = np.asarray(shown.resize((width, height), Image.BILINEAR))
        yield np.concatenate([shown, skeleton, picture], axis=1)


def main(argv: list[str] | None = None) -> None:
    argv = key_value_arguments(argv, __doc__)
    if argv is None:
        return
    with user_errors():
        animate(parse_options(argv))
