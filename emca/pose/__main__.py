"""``emca pose``: keypoints for your own photos.

    emca pose extract IMAGES_DIR --out annotations.csv [--min-visibility 0.5]

Writes the PATN annotation CSV (``name:keypoints_y:keypoints_x``) for every image in IMAGES_DIR in
which MediaPipe finds one person, and ``<out stem>-failures.csv`` (name,reason,detail) listing the
others: unreadable files, EXIF-rotated photos, no person found, several people.
A user-fixable problem (EmcaError) prints its message and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from emca.cli import run_command
from emca.pose.extract import extract_directory, failure_report_path

_FAILURES_SHOWN = 20  # the rest are in the CSV report


def _extract(args: argparse.Namespace) -> None:
    annotations, failures = extract_directory(args.images_dir, args.out, args.min_visibility)
    total = len(annotations) + len(failures)
    print(f"Keypoints of {len(annotations):,} of {total:,} images written to {args.out}.")
    if failures:
        report = failure_report_path(args.out)
        print(f"{len(failures):,} image(s) failed (all listed in {report}):")
        for failure in failures[:_FAILURES_SHOWN]:
            print(f"  {failure.name}: {failure.reason}: {failure.detail}")
        if len(failures) > _FAILURES_SHOWN:
            print(f"  ... and {len(failures) - _FAILURES_SHOWN:,} more.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emca pose", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    extract = commands.add_parser("extract", help="annotate a folder of photos with MediaPipe Pose")
    extract.add_argument("images_dir", type=Path)
    extract.add_argument("--out", type=Path, required=True, help="annotation CSV to write")
    extract.add_argument(
        "--min-visibility",
        type=float,
        default=0.5,
        help="landmarks below this MediaPipe visibility are missing",
    )
    extract.set_defaults(run=_extract)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
