"""Reading and writing the PATN annotation and pairs CSV files.

Annotation file (``fasion-resize-annotation-train.csv``, ``market-annotation-test.csv``, ...)::

    name:keypoints_y:keypoints_x
    fashionMENDenimid0000008001_1front.jpg: [23, 45, ...]: [88, 90, ...]

``:``-separated, JSON integer lists of 18 values, y (row) first, -1 for a missing joint.
Pairs file: comma-separated with header ``from,to``.
Every parsing error names the file and its 1-based line number.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from emca.data.keypoints import NUM_JOINTS
from emca.errors import DataError
from emca.io import atomic_open

ANNOTATION_HEADER = "name:keypoints_y:keypoints_x"


def _parse_coordinate_list(text: str, path: Path, line_number: int, field: str) -> list[int]:
    where = f"{path}, line {line_number}, field '{field}'"
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: expected a JSON list of {NUM_JOINTS} integers, got {text.strip()!r} ({err.msg}).") from err
    if not isinstance(values, list):
        raise DataError(f"{where}: expected a JSON list of {NUM_JOINTS} integers, got {text.strip()!r}.")
    if len(values) != NUM_JOINTS:
        raise DataError(f"{where}: expected {NUM_JOINTS} coordinates (one per COCO-18 joint), got {len(values)}.")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(f"{where}: expected integer coordinates (-1 for a missing joint), got {value!r}.")
    return values


def read_annotations(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an annotation CSV into ``{image name: keypoints (18, 2) int64 (row, col)}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Annotation file '{path}' does not exist.")
    annotations: dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
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
    if not path.is_file():
        raise DataError(f"Pairs file '{path}' does not exist.")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
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
