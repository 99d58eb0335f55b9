"""The entry point, :func:`build_from_videos`: checks the options and videos, runs the builder over every
video in a staging folder beside the root, writes the dataset, its report and contact sheet, and moves the folder
into place, or removes it when anything fails (:func:`emca.io.atomic_directory`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emca.data.annotations import write_annotations, write_pairs
from emca.data.video.collect import KeptCrop, _Builder, _VideoReader
from emca.data.video.detect import KeypointDetector, MediaPipeKeypoints, PersonDetector, hog_people_detector
from emca.data.video.layout import _contact_sheet, _markdown, _place_images, _report, _split
from emca.data.video.options import FromVideoOptions, Target, import_supervision, parse_preset
from emca.errors import DataError
from emca.io import atomic_directory, atomic_save_image, atomic_write_text


@dataclass
class FromVideoResult:
    """What :func:`build_from_videos` wrote: the counts of report.json and where the files are."""

    root: Path
    report: dict[str, Any]
    crops: list[KeptCrop] = field(repr=False)

    @property
    def identities(self) -> int:
        return int(self.report["identities"]["kept"])

    @property
    def pairs(self) -> dict[str, int]:
        return dict(self.report["pairs"])


def _check_root(root: Path, overwrite: bool) -> None:
    if root.is_file():
        raise DataError(f"--out '{root}' is a file; expected a folder for the dataset.")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise DataError(
            f"--out '{root}' already exists and is not empty; choose another folder or pass --overwrite to replace it "
            "once the new dataset is complete."
        )


def build_from_videos(
    videos: Sequence[str | os.PathLike],
    root: str | os.PathLike,
    preset: str | Target,
    options: FromVideoOptions | None = None,
    person_detector: PersonDetector | None = None,
    keypoint_detector: KeypointDetector | Callable[[], KeypointDetector] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> FromVideoResult:
    """Build the dataset under ``root`` from ``videos`` (see the package docstring); DataError when it cannot.

    ``person_detector`` defaults to :func:`hog_people_detector`, ``keypoint_detector`` to
    :class:`MediaPipeKeypoints` (built on the first crop that needs it). A ``keypoint_detector`` that is a class
    or a function of no arguments is called to build it.
    """
    options = options or FromVideoOptions()
    target = preset if isinstance(preset, Target) else parse_preset(preset)
    layout = target.layout()
    paths = [Path(video) for video in videos]
    assert paths, "name at least one video"
    readers = [_VideoReader(path) for path in paths]  # every video is checked before the long work starts
    import_supervision()
    root = Path(root)
    _check_root(root, overwrite)
    if keypoint_detector is None:
        make_keypoints: Callable[[], KeypointDetector] = lambda: MediaPipeKeypoints(options.min_keypoint_confidence)  # noqa: E731
    elif isinstance(keypoint_detector, type) or _takes_no_arguments(keypoint_detector):
        make_keypoints = keypoint_detector  # type: ignore[assignment]
    else:
        make_keypoints = lambda: keypoint_detector  # type: ignore[assignment,return-value]  # noqa: E731
    names = ", ".join(f"'{path}'" for path in paths)
    with atomic_directory(root) as staging:
        builder = _Builder(target, options, staging, person_detector or hog_people_detector(), make_keypoints, progress)
        try:
            for index, (path, reader) in enumerate(zip(paths, readers)):
                builder.process_video(index, path, reader)
        finally:
            builder.close()
        members, pairs, per_identity = _split(builder, target, options, names)
        images = _place_images(builder, members, layout, staging)
        for split in ("train", "test"):
            write_annotations(
                layout.annotation_path(staging, split),
                {c.name: c.keypoints for c in sorted(members[split], key=lambda c: c.name)},
            )
            write_pairs(layout.pairs_path(staging, split), pairs[split])
        kept = [crop for split in ("train", "test") for crop in members[split]]
        report = _report(builder, target, options, layout, root, members, pairs, per_identity, kept)
        atomic_write_text(staging / "report.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(staging / "report.md", _markdown(report))
        by_identity: dict[int, list[KeptCrop]] = {}
        for crop in kept:
            by_identity.setdefault(crop.identity, []).append(crop)
        atomic_save_image(_contact_sheet(by_identity, images, target), staging / "contact_sheet.png")
        shutil.rmtree(builder.crops_dir)
    return FromVideoResult(root, report, kept)


def _takes_no_arguments(function: Callable[..., Any]) -> bool:
    import inspect

    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return False
    return all(
        parameter.default is not inspect.Parameter.empty
        or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        for parameter in signature.parameters.values()
    )
