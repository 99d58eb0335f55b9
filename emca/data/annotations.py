"""Reading and writing the PATN annotation and pairs CSV files.

Annotation file (``fasion-resize-annotation-train.csv``, ``market-annotation-test.csv``, ...)::

    name:keypoints_y:keypoints_x
    fashionMENDenimid0000008001_1front.jpg: [23, 45, ...]: [88, 90, ...]

``:``-separated, JSON integer lists of 18 values, y (row) first, -1 in both lists for a missing joint.
Pairs file: comma-separated with header ``from,to``. Both files are UTF-8 text.
Every parsing error names the file and its 1-based line number.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from emca.data.keypoints import JOINT_NAMES, MISSING, NUM_JOINTS
from emca.errors import DataError
from emca.io import atomic_open

ANNOTATION_HEADER = "name:keypoints_y:keypoints_x"
# no image is anywhere near this large; the bound keeps a corrupt value such as 10**30 from overflowing
# the int64 keypoint arrays (the image's own bounds are checked once its size is known)
MAX_COORDINATE = 2**31 - 1


def _read_text(path: Path, description: str) -> str:
    """The contents of the UTF-8 text file ``path`` (``description`` names it in errors, e.g. 'Pairs file')."""
    if path.is_dir():
        raise DataError(f"{description} '{path}' is a directory; expected a CSV file at this path.")
    if not path.is_file():
        raise DataError(f"{description} '{path}' does not exist.")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{description} '{path}' cannot be read: {err.strerror}.") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_number = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}, line {line_number}: byte {data[err.start]:#04x} at byte offset {err.start} is not valid "
            f"UTF-8; the {description.lower()} must be saved as UTF-8 text."
        ) from err


def _parse_coordinate_list(text: str, path: Path, line_number: int, field: str) -> list[int]:
    where = f"{path}, line {line_number}, field '{field}'"
    try:
        values = json.loads(text)
    except ValueError as err:  # a JSONDecodeError, or an integer longer than Python converts from text
        detail = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
        raise DataError(
            f"{where}: expected a JSON list of {NUM_JOINTS} integers, got {text.strip()!r} ({detail})."
        ) from err
    if not isinstance(values, list):
        raise DataError(f"{where}: expected a JSON list of {NUM_JOINTS} integers, got {text.strip()!r}.")
    if len(values) != NUM_JOINTS:
        raise DataError(f"{where}: expected {NUM_JOINTS} coordinates (one per COCO-18 joint), got {len(values)}.")
    for joint, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(f"{where}: expected integer coordinates (-1 for a missing joint), got {value!r}.")
        if not MISSING <= value <= MAX_COORDINATE:
            raise DataError(
                f"{where}: joint '{JOINT_NAMES[joint]}' has coordinate {value}; expected -1 for a missing joint "
                f"or a pixel index from 0 to {MAX_COORDINATE} (and inside the image)."
            )
    return values


def read_annotations(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an annotation CSV into ``{image name: keypoints (18, 2) int64 (row, col)}``."""
    path = Path(path)
    lines = _read_text(path, "Annotation file").splitlines()
    annotations: dict[str, np.ndarray] = {}
    if not lines or lines[0].replace(" ", "") != ANNOTATION_HEADER:
        found = lines[0] if lines else "an empty file"
        raise DataError(f"{path}, line 1: expected the header '{ANNOTATION_HEADER}', found {found!r}.")
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(":")
        if len(fields) != 3:
            raise DataError(
                f"{path}, line {line_number}: expected 3 ':'-separated fields (name: [y...]: [x...]), "
                f"got {len(fields)}."
            )
        name = fields[0].strip()
        rows = _parse_coordinate_list(fields[1], path, line_number, "keypoints_y")
        cols = _parse_coordinate_list(fields[2], path, line_number, "keypoints_x")
        half_missing = [joint for joint in range(NUM_JOINTS) if (rows[joint] == MISSING) != (cols[joint] == MISSING)]
        if half_missing:
            joint = half_missing[0]
            raise DataError(
                f"{path}, line {line_number}: joint '{JOINT_NAMES[joint]}' of '{name}' has keypoints_y "
                f"{rows[joint]} and keypoints_x {cols[joint]}; a missing joint must have both set to -1 "
                f"({len(half_missing)} joint(s) on this line have only one)."
            )
        if name in annotations:
            raise DataError(f"{path}, line {line_number}: image '{name}' is annotated twice.")
        annotations[name] = np.stack([np.asarray(rows), np.asarray(cols)], axis=1).astype(np.int64)
    return annotations


def write_annotations(path: str | os.PathLike, annotations: dict[str, np.ndarray]) -> None:
    """Write ``{name: keypoints (18, 2) (row, col)}`` in the PATN format (atomically)."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(ANNOTATION_HEADER + "\n")
        for name, keypoints in annotations.items():
            rows = json.dumps([int(v) for v in keypoints[:, 0]])
            cols = json.dumps([int(v) for v in keypoints[:, 1]])
            handle.write(f"{name}: {rows}: {cols}\n")


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read a pairs CSV (header ``from,to``) into a list of (source name, target name)."""
    path = Path(path)
    reader = csv.reader(io.StringIO(_read_text(path, "Pairs file"), newline=""))
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != ["from", "to"]:
        raise DataError(f"{path}, line 1: expected the header 'from,to', found {','.join(header or [])!r}.")
    pairs = []
    for line_number, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise DataError(f"{path}, line {line_number}: expected 2 comma-separated names (from,to), got {len(row)}.")
        pairs.append((row[0].strip(), row[1].strip()))
    return pairs


def write_pairs(path: str | os.PathLike, pairs: list[tuple[str, str]]) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["from", "to"])
        writer.writerows(pairs)
