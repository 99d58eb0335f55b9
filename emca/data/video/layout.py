"""The dataset from the kept crops: pairs, the train / test split (by identity or by time), placing the images
in the PATN layout, report.json and report.md, and the contact sheet.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from emca.data.dataset import DatasetLayout
from emca.data.video.collect import KeptCrop, _Builder
from emca.data.video.crops import CAUSES, pose_difference
from emca.data.video.options import FromVideoOptions, Target
from emca.data.video.track import SPLIT_REASONS, colour_distance
from emca.errors import DataError

CONTACT_SHEET_COLUMNS = 10
CONTACT_SHEET_MAX_ROWS = 200
_LABEL_WIDTH = 96


def _pairs(crops: list[KeptCrop], threshold: float, height: int) -> list[tuple[str, str]]:
    """Ordered pairs (a, b), a != b, of ``crops`` whose poses differ by more than ``threshold``, by name."""
    ordered = sorted(crops, key=lambda crop: crop.name)
    return [
        (a.name, b.name)
        for a in ordered
        for b in ordered
        if a is not b and pose_difference(a.keypoints, b.keypoints, height) > threshold
    ]


def _test_identities(identities: list[int], fraction: float) -> set[int]:
    """Evenly spread test identities: max(1, round(fraction * n)) of the n (sorted) identities."""
    count = max(1, round(fraction * len(identities)))
    return {identities[int((i + 0.5) * len(identities) / count)] for i in range(count)}


def _too_few(message: str, builder: _Builder, target: Target, options: FromVideoOptions, videos: str) -> DataError:
    """The error for a dataset too small to split: the preset's, if crops too small for it outnumber those kept."""
    kept = len(builder.crops)
    if builder.rejected["too_small"] > kept:
        need = math.ceil(target.height / options.max_upscale)
        return DataError(
            f"The {target.label} preset ({target.height}x{target.width}) cannot be filled from {videos}: "
            f"{builder.rejected['too_small']} crop(s) were too small for it and only {kept} were kept. A crop window "
            f"(the person's box plus the margin, at the preset's aspect ratio) must be at least {need} px tall to be "
            f"upscaled at most {options.max_upscale:g} times, and the largest found was {builder.largest_window} px. "
            "Choose a smaller preset (e.g. market or 96x48), a video where people are closer, or a larger "
            "--max-upscale."
        )
    causes = ", ".join(f"{key} {count}" for key, count in builder.rejected.most_common() if count)
    return DataError(f"{message} (crops kept {kept}; rejected: {causes or 'none'}). See docs/from_video.md.")


def _split(
    builder: _Builder, target: Target, options: FromVideoOptions, videos: str
) -> tuple[dict[str, list[KeptCrop]], dict[str, list[tuple[str, str]]], dict[int, dict[str, Any]]]:
    """Assign kept crops to train / test and pair them; drops (and counts) crops that end up in no pair."""
    by_identity: dict[int, list[KeptCrop]] = {}
    for crop in builder.crops:
        by_identity.setdefault(crop.identity, []).append(crop)
    usable: dict[int, list[KeptCrop]] = {}
    for identity, crops in sorted(by_identity.items()):
        if len(crops) < 2:
            builder.rejected["single_crop"] += len(crops)
        elif not _pairs(crops, options.min_pose_difference, target.height):
            builder.rejected["no_pose_pair"] += len(crops)
        else:
            usable[identity] = crops
    identities = sorted(usable)
    members: dict[str, list[KeptCrop]] = {"train": [], "test": []}
    pairs: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    per_identity: dict[int, dict[str, Any]] = {}

    def assign(identity: int, split: str, crops: list[KeptCrop]) -> None:
        identity_pairs = _pairs(crops, options.min_pose_difference, target.height)
        if not identity_pairs:
            builder.rejected["no_pose_pair"] += len(crops)
            return
        paired = {name for pair in identity_pairs for name in pair}
        unpaired = [crop for crop in crops if crop.name not in paired]
        builder.rejected["no_pose_pair"] += len(unpaired)
        for crop in crops:
            if crop.name in paired:
                crop.split = split
                members[split].append(crop)
        pairs[split].extend(identity_pairs)
        entry = per_identity.setdefault(identity, {"splits": {}, "crops": 0, "pairs": 0})
        entry["splits"][split] = len(paired)
        entry["crops"] += len(paired)
        entry["pairs"] += len(identity_pairs)

    if options.split == "identity":
        if len(identities) < 2:
            raise _too_few(
                f"Too few identities in {videos} for a split by identity: {len(identities)} identity(ies) with a pair "
                "of crops were found, and train and test need one each. Use --split time, more or longer videos, "
                "or relax the rules (e.g. --min-gap, --min-pose-difference)",
                builder,
                target,
                options,
                videos,
            )
        test = _test_identities(identities, options.test_fraction)
        for identity in identities:
            assign(identity, "test" if identity in test else "train", usable[identity])
    else:
        for identity in identities:
            crops = sorted(usable[identity], key=lambda crop: crop.frame)
            tail = round(options.test_fraction * len(crops))
            head, rest = crops[: len(crops) - tail], crops[len(crops) - tail :]
            split_here = (
                tail >= 2
                and len(head) >= 2
                and _pairs(head, options.min_pose_difference, target.height)
                and _pairs(rest, options.min_pose_difference, target.height)
            )
            if split_here:
                assign(identity, "train", head)
                assign(identity, "test", rest)
            else:
                assign(identity, "train", crops)
        if not pairs["test"] or not pairs["train"]:
            raise _too_few(
                f"Too few crops in {videos} for a split by time: no identity has enough crops to give both train and "
                f"test a pair (an identity's last {options.test_fraction:g} of its crops go to test, and each part "
                "needs two crops whose poses differ). Use longer videos or relax the rules (e.g. --min-gap, "
                "--test-fraction)",
                builder,
                target,
                options,
                videos,
            )
    return members, pairs, per_identity


def _contact_sheet(crops: dict[int, list[KeptCrop]], images: dict[str, Path], target: Target) -> Image.Image:
    """A row per identity (at most CONTACT_SHEET_COLUMNS crops, evenly spaced in time), labelled on the left."""
    rows = sorted(crops)[:CONTACT_SHEET_MAX_ROWS]
    sheet = Image.new(
        "RGB", (_LABEL_WIDTH + CONTACT_SHEET_COLUMNS * target.width, max(1, len(rows)) * target.height), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for row, identity in enumerate(rows):
        members = sorted(crops[identity], key=lambda crop: crop.frame)
        chosen = [members[int(i)] for i in np.linspace(0, len(members) - 1, min(len(members), CONTACT_SHEET_COLUMNS))]
        splits = "/".join(sorted({crop.split for crop in members}))
        draw.text((4, row * target.height + 4), f"id {identity:04d}\n{splits}\n{len(members)} crops", fill="black")
        for column, crop in enumerate(chosen):
            with Image.open(images[crop.name]) as image:
                sheet.paste(image.convert("RGB"), (_LABEL_WIDTH + column * target.width, row * target.height))
    return sheet


PURITY_METHOD = (
    "A tracker track is cut into a new identity wherever, between two frames, its box centre moves more than "
    "(max_jump + max_speed x seconds elapsed) box heights or its height changes more than max_size_change times, and "
    "wherever a crop's clothing colours (mean CIE Lab colour of the torso and of the thighs, placed by the crop's "
    "pose) differ from the running colours of its identity's kept crops by more than max_colour_distance (delta E) "
    "on two candidate crops in a row (one such crop alone is rejected as a colour outlier). "
    "Each identity's max_colour_distance_seen is the largest delta E between one of its kept crops and the mean "
    "colours of its kept crops. Colours cannot tell apart two people dressed alike: look at contact_sheet.png "
    "(a row per identity) before training."
)


def _markdown(report: dict[str, Any]) -> str:
    crops, identities, pairs = report["crops"], report["identities"], report["pairs"]
    target = report["target"]
    lines = [
        f"# Dataset from video: {target['preset']} ({target['height']}x{target['width']})",
        "",
        "| | |",
        "|---|---|",
        f"| videos | {', '.join(video['path'] for video in report['videos'])} |",
        f"| frames read / searched | {sum(v['frames_read'] for v in report['videos'])} / "
        f"{sum(v['frames_searched'] for v in report['videos'])} |",
        f"| people detected (boxes) | {crops['candidates']} |",
        f"| identities | {identities['kept']} kept ({identities['train']} train, {identities['test']} test) of "
        f"{identities['started']} started |",
        f"| crops | {crops['kept']} kept ({crops['train']} train, {crops['test']} test) |",
        f"| pairs | {pairs['train']} train, {pairs['test']} test |",
        f"| split | {report['options']['split']} |",
        "",
        "## Crops rejected, by cause (the first that applies, in this order)",
        "",
        "| cause | crops | meaning |",
        "|---|---:|---|",
    ]
    lines += [f"| {key} | {crops['rejected'][key]} | {meaning} |" for key, meaning in CAUSES.items()]
    purity = report["purity"]
    lines += [
        "",
        "## Identity purity",
        "",
        purity["method"],
        "",
        f"Identities started by a new track: {purity['started']['track']}; by a jump in position: "
        f"{purity['started']['position']}, in size: {purity['started']['size']}, in appearance: "
        f"{purity['started']['appearance']}.",
        "",
        "| identity | split | video | frames | crops | pairs | max colour distance seen |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for entry in report["identity_list"]:
        lines.append(
            f"| {entry['identity']:04d} | {'/'.join(entry['splits'])} | {entry['video'] + 1} | "
            f"{entry['first_frame']}-{entry['last_frame']} | {entry['crops']} | {entry['pairs']} | "
            f"{entry['max_colour_distance_seen']:.1f} |"
        )
    lines += ["", "## Next", "", f"    {report['validate_command']}", "", f"    {report['train_overrides']}", ""]
    return "\n".join(lines)


def _place_images(
    builder: _Builder, members: dict[str, list[KeptCrop]], layout: DatasetLayout, staging: Path
) -> dict[str, Path]:
    """Move each kept crop from the staging crops folder into its split's image folder (renames)."""
    images = {}
    for split in ("train", "test"):
        folder = layout.image_dir_path(staging, split)
        folder.mkdir(parents=True, exist_ok=True)
        for crop in members[split]:
            os.replace(builder.crops_dir / crop.name, folder / crop.name)
            images[crop.name] = folder / crop.name
    return images


def _report(
    builder: _Builder,
    target: Target,
    options: FromVideoOptions,
    layout: DatasetLayout,
    root: Path,
    members: dict[str, list[KeptCrop]],
    pairs: dict[str, list[tuple[str, str]]],
    per_identity: dict[int, dict[str, Any]],
    kept: list[KeptCrop],
) -> dict[str, Any]:
    rejected = {key: int(builder.rejected[key]) for key in CAUSES}
    identity_list = []
    for identity in sorted(per_identity):
        crops = [crop for crop in kept if crop.identity == identity]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a part no crop showed: all NaN
            mean = np.nanmean([crop.colours for crop in crops], axis=0)
        identity_list.append(
            {
                "identity": identity,
                "splits": sorted(per_identity[identity]["splits"]),
                "video": builder.identity_video[identity],
                "started_by": builder.identity_started[identity],
                "first_frame": min(crop.frame for crop in crops),
                "last_frame": max(crop.frame for crop in crops),
                "crops": per_identity[identity]["crops"],
                "pairs": per_identity[identity]["pairs"],
                "max_colour_distance_seen": round(max(colour_distance(crop.colours, mean) for crop in crops), 2),
            }
        )
    started = Counter(builder.identity_started.values())
    size_flags = "" if target.layout_preset == target.label else f" --height {target.height} --width {target.width}"
    data = "market" if target.layout_preset == "market" else "deepfashion"
    return {
        "target": {
            "preset": target.label,
            "layout": target.layout_preset,
            "height": target.height,
            "width": target.width,
            "files": asdict(layout),
        },
        "options": asdict(options),
        "videos": [asdict(video) for video in builder.videos],
        "identities": {
            "started": len(builder.identity_started),
            "kept": len(per_identity),
            "train": sum(1 for entry in per_identity.values() if "train" in entry["splits"]),
            "test": sum(1 for entry in per_identity.values() if "test" in entry["splits"]),
        },
        "crops": {
            "candidates": sum(video.detections for video in builder.videos),
            "kept": len(kept),
            "train": len(members["train"]),
            "test": len(members["test"]),
            "rejected": rejected,
        },
        "pairs": {"train": len(pairs["train"]), "test": len(pairs["test"])},
        "purity": {
            "method": PURITY_METHOD,
            "started": {"track": started["track"], **{reason: started[reason] for reason in SPLIT_REASONS}},
            "thresholds": {
                "max_jump": options.max_jump,
                "max_speed": options.max_speed,
                "max_size_change": options.max_size_change,
                "max_colour_distance": options.max_colour_distance,
                "colour_update": options.colour_update,
            },
        },
        "identity_list": identity_list,
        "crop_list": [
            {
                "name": crop.name,
                "split": crop.split,
                "identity": crop.identity,
                "video": crop.video,
                "frame": crop.frame,
                "box": [round(v, 1) for v in crop.box],
                "limb_confidence": round(crop.confidence, 3),
            }
            for crop in sorted(kept, key=lambda crop: crop.name)
        ],
        "validate_command": f"emca data validate {root} --preset {target.layout_preset}{size_flags}",
        "train_overrides": f"data={data} data.root={root}"
        + ("" if target.layout_preset == target.label else f" data.height={target.height} data.width={target.width}"),
    }
