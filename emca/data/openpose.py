"""OpenPose JSON output -> PATN keypoints, so users can annotate their own photos.

OpenPose (``--write_json DIR``) writes one ``<image stem>_keypoints.json`` per image holding
``{"people": [{"pose_keypoints_2d": [x0, y0, c0, x1, y1, c1, ...]}, ...]}`` in pixel coordinates
(the default ``--keypoint_scale 0``). The COCO model (``--model_pose COCO``) gives 18 joints in exactly
the order used here. The default BODY_25 model gives 25 joints: the COCO-18 joints are the same
except that BODY_25 inserts a mid-hip joint at index 8 and appends six foot joints, so joint i of
COCO-18 is joint ``BODY25_TO_COCO18[i]`` of BODY_25 (OpenPose doc/02_output.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emca.data.annotations import MAX_COORDINATE, write_annotations
from emca.data.keypoints import MISSING, NUM_JOINTS
from emca.errors import DataError

MultiplePeople = Literal["largest", "error"]

BODY25_TO_COCO18: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
_BODY25_JOINTS = 25
_TRIPLE_FIELDS = ("x", "y", "confidence")


def read_json(path: Path, what: str) -> Any:
    """The parsed content of a UTF-8 JSON file; a DataError naming ``what`` (e.g. 'pose JSON') and ``path``."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"Cannot read {what} '{path}': {err.strerror or err}.") from err
    try:
        # utf-8-sig: Windows editors often start UTF-8 files with a byte-order mark
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # err.object, not raw: the decoder reports positions in the text after the byte-order mark
        line = err.object.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"Cannot read {what} '{path}': byte 0x{err.object[err.start]:02x} on line {line} is not valid UTF-8; "
            "the file must be UTF-8 JSON. Re-save it as UTF-8 (most editors offer the encoding under 'Save as')."
        ) from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"Cannot read {what} '{path}': line {err.lineno}, column {err.colno} is not valid JSON ({err.msg})."
        ) from err


def _person_keypoints(values: list, path: Path, person: int, threshold: float) -> np.ndarray:
    """(18, 2) int64 (row, col) from one person's flat x, y, confidence list; weak joints -> -1."""
    if len(values) not in (3 * NUM_JOINTS, 3 * _BODY25_JOINTS):
        raise DataError(
            f"{path}, people[{person}].pose_keypoints_2d: expected {3 * NUM_JOINTS} values (COCO-18) or "
            f"{3 * _BODY25_JOINTS} (BODY_25) as x, y, confidence triples, got {len(values)}. Run OpenPose with "
            "--model_pose COCO or BODY_25."
        )
    try:
        flat = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}, people[{person}].pose_keypoints_2d: expected numbers ({err}).") from err
    # rounding a value like 1e300 to int64 would overflow into garbage instead of failing
    is_coordinate = np.arange(len(flat)) % 3 != 2
    broken = ~np.isfinite(flat) | (is_coordinate & (np.abs(flat) > MAX_COORDINATE))
    if broken.any():
        index = int(np.argmax(broken))
        raise DataError(
            f"{path}, people[{person}].pose_keypoints_2d[{index}] ({_TRIPLE_FIELDS[index % 3]} of joint "
            f"{index // 3}): expected a finite number (pixel coordinates up to {MAX_COORDINATE}; 0, 0, 0 for an "
            f"undetected joint), got {values[index]!r}."
        )
    triples = flat.reshape(-1, 3)
    if len(triples) == _BODY25_JOINTS:
        triples = triples[list(BODY25_TO_COCO18)]
    keypoints = np.rint(triples[:, [1, 0]]).astype(np.int64)  # (x, y) -> (row, col)
    confidence = triples[:, 2]
    # OpenPose writes 0, 0, 0 for an undetected joint; weak detections are treated the same way
    weak = (confidence <= 0) | (confidence < threshold) | (keypoints < 0).any(axis=1)
    keypoints[weak] = MISSING
    return keypoints


def _extent(keypoints: np.ndarray) -> int:
    """Bounding-box area of a person's detected joints (0 with fewer than two)."""
    present = keypoints[(keypoints != MISSING).all(axis=1)]
    if len(present) < 2:
        return 0
    height, width = present.max(axis=0) - present.min(axis=0)
    return int(height * width)


def read_openpose_json(
    path: str | os.PathLike, confidence_threshold: float = 0.1, multiple_people: MultiplePeople = "largest"
) -> np.ndarray | None:
    """Keypoints (18, 2) (row, col) of the person in one OpenPose JSON file, or None if nobody was found.

    With several people, ``multiple_people="largest"`` keeps the one whose detected joints span the
    largest box, ``"error"`` raises a DataError.
    """
    path = Path(path)
    return openpose_keypoints(read_json(path, "OpenPose JSON"), path, confidence_threshold, multiple_people)


def openpose_keypoints(
    content: Any, path: Path, confidence_threshold: float = 0.1, multiple_people: MultiplePeople = "largest"
) -> np.ndarray | None:
    """:func:`read_openpose_json` on the already parsed ``content`` of the file ``path`` (named in errors)."""
    people = content.get("people") if isinstance(content, dict) else None
    if not isinstance(people, list):
        raise DataError(f"{path}: expected an OpenPose JSON object with a 'people' list.")
    candidates = []
    for index, person in enumerate(people):
        # 'pose_keypoints' is the field name of OpenPose releases before 1.3
        values = person.get("pose_keypoints_2d", person.get("pose_keypoints")) if isinstance(person, dict) else None
        if not isinstance(values, list):
            raise DataError(f"{path}, people[{index}]: missing the 'pose_keypoints_2d' list.")
        candidates.append(_person_keypoints(values, path, index, confidence_threshold))
    if not candidates:
        return None
    if len(candidates) > 1:
        if multiple_people == "error":
            raise DataError(
                f"{path}: {len(candidates)} people detected; pose transfer needs one person per image. "
                "Crop the photo, or keep the largest person (multiple_people='largest', --multiple-people largest)."
            )
        if multiple_people != "largest":
            raise DataError(f"multiple_people must be 'largest' or 'error', got {multiple_people!r}.")
    return max(candidates, key=_extent)


def openpose_dir_to_annotations(
    json_dir: str | os.PathLike,
    out_csv: str | os.PathLike,
    image_extension: str = ".jpg",
    confidence_threshold: float = 0.1,
    multiple_people: MultiplePeople = "largest",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Convert every ``*.json`` in ``json_dir`` into one PATN annotation CSV (written atomically).

    ``photo_keypoints.json`` annotates ``photo`` + ``image_extension``. Returns the annotations written
    and the JSON files skipped because nobody was detected in them.
    """
    json_dir = Path(json_dir)
    files = sorted(json_dir.glob("*.json"))
    if not files:
        raise DataError(f"No OpenPose '*.json' files in '{json_dir}'. Run OpenPose with --write_json {json_dir}.")
    annotations: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    for path in files:
        keypoints = read_openpose_json(path, confidence_threshold, multiple_people)
        if keypoints is None:
            skipped.append(path.name)
            continue
        annotations[path.stem.removesuffix("_keypoints") + image_extension] = keypoints
    write_annotations(out_csv, annotations)
    return annotations, skipped
