"""The README is a front door, not a lab notebook: short, data preparation early, and saying about a dataset's
files what data/README.md and `emca data prepare --help` say."""

from __future__ import annotations

import re
from pathlib import Path

from emca.data.__main__ import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
# what a researcher must get right about the raw release, in every place that describes it
RAW_FACTS = (
    "fasion-resize-annotation-{train,test}.csv",
    "fasion-resize-pairs-{train,test}.csv",
    "bounding_box_train/",
    "password",
    "101,966 / 8,570",
    "263,632 / 12,000",
)


def prepare_help() -> str:
    subcommands = next(action for action in build_parser()._actions if action.dest == "command")
    return subcommands.choices["prepare"].format_help()


def test_the_readme_is_short_and_prepares_data_early() -> None:
    lines = README.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; measurements belong in docs/results/"
    assert len(README.encode("utf-8")) <= 20_000
    first = next(number for number, line in enumerate(lines, 1) if line.startswith("emca data prepare deepfashion"))
    assert first <= 120, f"the DeepFashion preparation command is on line {first}"


def test_readme_data_readme_and_prepare_help_agree_on_the_raw_release() -> None:
    texts = {"README.md": README, "data/README.md": (REPO / "data" / "README.md").read_text(), "--help": prepare_help()}
    # the release's facts, with line wrapping removed (--help is reflowed by argparse)
    flat = {name: re.sub(r"\s+", " ", text) for name, text in texts.items()}
    for fact in RAW_FACTS:
        missing = [name for name, text in flat.items() if fact not in text]
        assert not missing, f"{fact!r} is missing from {missing}"


def test_the_readme_shows_real_people_first() -> None:
    first_image = re.search(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert first_image and first_image.group(1) == "docs/real_pedestrians_sheet.png"
    assert (REPO / first_image.group(1)).is_file()
