"""``emca data``: generate, convert, pair, annotate and check datasets.

    emca data synthetic ROOT --height 64 --width 48 --seed 0 [--train-identities 600]
    emca data prepare deepfashion RAW OUT [--size 256x176|512x352] [--keypoints-frame auto|256x256|256x176]
    emca data prepare market RAW OUT
    emca data pairs ANNOTATIONS.csv --out PAIRS.csv --person-id deepfashion
    emca data openpose JSON_DIR --out ANNOTATIONS.csv
    emca data validate ROOT --preset deepfashion
    emca data from-video VIDEO [VIDEO ...] --out ROOT --preset market|deepfashion|HxW

A user-fixable problem (EmcaError) prints its message and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from emca.cli import renamed_flag, run_command
from emca.data.annotations import read_annotations, write_pairs
from emca.data.dataset import PRESETS, make_layout, validate_split
from emca.data.prepare import KEYPOINT_FRAMES, OUTPUT_SIZES
from emca.data.synthetic import (
    DEFAULT_HEIGHT,
    DEFAULT_NUM_TEST_IDENTITIES,
    DEFAULT_NUM_TRAIN_IDENTITIES,
    DEFAULT_POSES_PER_IDENTITY,
    DEFAULT_WIDTH,
    MIN_SIZE,
    SyntheticPeople,
)
from emca.errors import ConfigError
from emca.options import FLAGS, given, parse

PREPARE_GUIDE = """\
where the files come from (data/README.md says more):
  Market-1501   the official re-identification release; rename its bounding_box_train/ and
                bounding_box_test/ to train/ and test/. market-pairs-{train,test}.csv and
                market-annotation-{train,test}.csv are distributed by PATN (Pose-Transfer's README).
  DeepFashion   the In-shop Clothes Retrieval release (CUHK MMLab); the images need a password that the
                dataset's maintainers send on request. Three preprocessed releases are in use, told apart by
                what RAW holds:
    PATN        fasion-resize-pairs-{train,test}.csv and fasion-resize-annotation-{train,test}.csv
                (spelled "fasion"), distributed by PATN, whose tool/generate_fashion_datasets.py puts the
                256x256 images into train/ and test/ under flattened names such as
                fashionMENDenimid0000008001_1front.jpg. Output: 256x176 (the central crop).
    DPTN / CFLD fashion-resize-pairs-{train,test}.csv, fashion-resize-annotation-{train,test}.csv (256x176
                frame), train.lst and test.lst, and the img_highres MEN/ and WOMEN/ trees (in RAW, or in
                RAW/img_highres/). Output: 256x176 or, with --size 512x352, 512x352 (keypoints x2).
    GFLA / NTED train_pairs.txt and test_pairs.txt (a line: target,source[,source ...] of paths such as
    / PIDM      img/MEN/Denim/id_00000080/01_1_front.jpg), train.lst and test.lst, pose/ (one file of 18
                "x y" lines per image, mirroring the trees; 256x256 frame in the release) and the
                img_highres trees (in RAW/img/, RAW/img_highres/ or RAW). Output: 256x176 or 512x352.
  The keypoints' frame is read from the files (a joint beyond x = 175 means 256x256, shifted by -40 into
  the crop) unless --keypoints-frame states it; prepare prints which and why.

RAW must hold (Market-1501, and DeepFashion's PATN release):
  RAW/train/*.jpg  RAW/test/*.jpg                 256x256 DeepFashion or 128x64 Market-1501 images
  RAW/fasion-resize-annotation-{train,test}.csv   DeepFashion (market-annotation-* for Market-1501)
  RAW/fasion-resize-pairs-{train,test}.csv        DeepFashion (market-pairs-* for Market-1501)

A folder already in emca's layout (these names, 256x176 or 512x352 images) is recognised: prepare checks it,
writes nothing and says so; train on it with data.root=FOLDER. The FID reference set is the whole training
folder (train.lst of the high-resolution releases: 48,674 images).

prepare prints the release and keypoint frame it used and why, the joints that fell outside the crop, the
images written, and each split's pair count against the published one (DeepFashion 101,966 / 8,570;
Market-1501 263,632 / 12,000). Then: emca data validate OUT --preset deepfashion (at 512x352 add
--height 512 --width 352), and emca train experiment=xinggan_deepfashion data.root=OUT.
"""

# `synthetic`'s count flags: flag, the generator's option, help; unset ones keep the generator's default
_COUNT_FLAGS = (
    ("--train-identities", "num_train_identities", f"people in the training split (default "
     f"{DEFAULT_NUM_TRAIN_IDENTITIES}; emca train's embedded default generates 600, conf/data/synthetic.yaml)"),
    ("--test-identities", "num_test_identities", f"people in the test split (default {DEFAULT_NUM_TEST_IDENTITIES})"),
    ("--poses", "poses_per_identity", f"images of each person (default {DEFAULT_POSES_PER_IDENTITY})"),
)  # fmt: skip


def _synthetic(args: argparse.Namespace) -> None:
    from emca.data.synthetic import generate_synthetic_dataset  # looked up here, so a test can stand in for it

    layout = PRESETS[args.preset]
    height = args.height or layout.height or DEFAULT_HEIGHT
    width = args.width or layout.width or DEFAULT_WIDTH
    if min(height, width) < MIN_SIZE:
        raise ConfigError(f"--height / --width: both sides must be at least {MIN_SIZE} px, got {height}x{width}.")
    if args.seed < 0:
        raise ConfigError(f"--seed: expected a non-negative integer, got {args.seed}.")
    counts = {option: getattr(args, option) for _, option, _ in _COUNT_FLAGS if getattr(args, option) is not None}
    people = given(parse(SyntheticPeople, counts, ""), counts)
    generate_synthetic_dataset(args.root, height=height, width=width, seed=args.seed, preset=args.preset, **people)
    print(f"Synthetic dataset ({height}x{width}, {args.preset} file names) written to {args.root}.")


def _prepare(args: argparse.Namespace) -> None:
    from emca.data.prepare import prepare_deepfashion, prepare_market

    if args.dataset == "deepfashion":
        prepare_deepfashion(args.raw, args.out, args.keypoints_frame, size=args.size)
    elif args.size != "256x176":
        raise ConfigError(f"--size {args.size}: Market-1501 has one size, 128x64; --size is for DeepFashion.")
    else:
        prepare_market(args.raw, args.out)


def _pairs(args: argparse.Namespace) -> None:
    from emca.data.pairs import build_pairs, person_id_rule

    try:
        rule = person_id_rule(args.person_id)
    except ValueError as err:
        raise ConfigError(f"--person-id: {err}") from err
    pairs = build_pairs(read_annotations(args.annotations), rule)
    write_pairs(args.out, pairs)
    print(f"{len(pairs):,} pairs written to {args.out}.")


def _openpose(args: argparse.Namespace) -> None:
    from emca.data.openpose import openpose_dir_to_annotations

    annotations, skipped = openpose_dir_to_annotations(
        args.json_dir, args.out, args.image_ext, args.confidence, args.multiple_people
    )
    print(f"{len(annotations):,} images annotated in {args.out}.")
    if skipped:
        print(f"Skipped {len(skipped)} file(s) with nobody detected, e.g. {', '.join(skipped[:5])}.")


def _validate(args: argparse.Namespace) -> None:
    for side in ("height", "width"):
        if getattr(args, side) is None and getattr(PRESETS[args.preset], side) is None:
            raise ConfigError(f"--{side}: the '{args.preset}' preset has no fixed image size; give --{side}.")
    layout = make_layout(args.preset, args.height, args.width, args.image_dir, args.annotation_file, args.pairs_file)
    for split in args.splits:
        # unlike training's header-only check, decode every image: truncated and corrupt files fail here
        contents = validate_split(args.root, layout, split, decode=True)
        print(
            f"{split}: {len(contents.pairs):,} pairs over {len(contents.image_names):,} images "
            f"({len(contents.annotations):,} annotated) in {contents.image_dir}, all decoded at "
            f"{layout.height}x{layout.width}: OK"
        )


def _from_video(args: argparse.Namespace) -> None:
    from emca.data.video import FromVideoOptions, build_from_videos, parse_preset  # needs the pose extra

    try:
        target = parse_preset(args.preset)
    except ValueError as err:
        raise ConfigError(f"--preset: {err}") from err
    flags = {field.name for field in dataclasses.fields(FromVideoOptions)} & set(vars(args))
    options = parse(FromVideoOptions, {name: getattr(args, name) for name in flags}, FLAGS)
    result = build_from_videos(args.videos, args.out, target, options, overwrite=args.overwrite)
    report = result.report
    crops, identities, pairs = report["crops"], report["identities"], report["pairs"]
    rejected = ", ".join(f"{key} {count:,}" for key, count in crops["rejected"].items() if count)
    print(
        f"{identities['kept']} identities ({identities['train']} train, {identities['test']} test), "
        f"{crops['kept']:,} crops ({crops['train']:,} train, {crops['test']:,} test), {pairs['train']:,} train and "
        f"{pairs['test']:,} test pairs written to {args.out}."
    )
    print(f"Rejected crops: {rejected or 'none'}.")
    print(f"Report: {args.out / 'report.md'}; contact sheet: {args.out / 'contact_sheet.png'}.")
    print(f"Check it with: {report['validate_command']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emca data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    synthetic = commands.add_parser("synthetic", help="generate the synthetic dataset")
    synthetic.add_argument("root", type=Path)
    synthetic.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="synthetic",
        help="the file names and size of this dataset format (market, deepfashion: a stand-in for the real data)",
    )
    synthetic.add_argument("--height", type=int, default=None, help="default: the preset's (synthetic: 64)")
    synthetic.add_argument("--width", type=int, default=None, help="default: the preset's (synthetic: 48)")
    synthetic.add_argument("--seed", type=int, default=0)
    for flag, option, meaning in _COUNT_FLAGS:
        synthetic.add_argument(flag, dest=option, metavar="N", type=int, default=None, help=meaning)
    synthetic.set_defaults(run=_synthetic)

    prepare = commands.add_parser(
        "prepare",
        help="convert a raw DeepFashion / Market-1501 release",
        description="Convert a DeepFashion In-shop release (PATN, DPTN / CFLD or GFLA / NTED / PIDM files) or a "
        "Market-1501 release into emca's layout.",
        epilog=PREPARE_GUIDE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("dataset", choices=("deepfashion", "market"))
    prepare.add_argument("raw", type=Path, help="the release's folder (what it must hold: below)")
    prepare.add_argument("out", type=Path)
    prepare.add_argument(
        "--keypoints-frame",
        choices=KEYPOINT_FRAMES,
        default="auto",
        help="DeepFashion: the frame of the annotation's keypoints (default auto: read from the files, a joint "
        "beyond x = 175 means 256x256); PATN's and DPTN's CSVs are in the 256x176 frame, the pose/ files of "
        "GFLA / NTED / PIDM in the 256x256 one",
    )
    prepare.add_argument(
        "--size",
        choices=tuple(OUTPUT_SIZES),
        default="256x176",
        help="DeepFashion: the output size (512x352 from the high-resolution images of the DPTN / CFLD or GFLA / "
        "NTED / PIDM release)",
    )
    renamed_flag(prepare, "--keypoints-cropped", "--keypoints-frame 256x176")
    prepare.set_defaults(run=_prepare)

    pairs = commands.add_parser("pairs", help="build all same-person pairs from an annotation CSV")
    pairs.add_argument("annotations", type=Path)
    pairs.add_argument("--out", type=Path, required=True)
    pairs.add_argument(
        "--person-id",
        required=True,
        help="deepfashion, market, prefix:SEP, or regex:PATTERN with one group (the person id)",
    )
    pairs.set_defaults(run=_pairs)

    openpose = commands.add_parser("openpose", help="convert OpenPose JSON files into an annotation CSV")
    openpose.add_argument("json_dir", type=Path)
    openpose.add_argument("--out", type=Path, required=True)
    openpose.add_argument("--image-ext", default=".jpg", help="extension of the images the JSON files describe")
    openpose.add_argument("--confidence", type=float, default=0.1, help="joints below this confidence are missing")
    openpose.add_argument("--multiple-people", choices=("largest", "error"), default="largest")
    openpose.set_defaults(run=_openpose)

    validate = commands.add_parser("validate", help="check a dataset before training, decoding every image")
    validate.add_argument("root", type=Path)
    validate.add_argument("--preset", choices=sorted(PRESETS), required=True)
    validate.add_argument("--height", type=int)
    validate.add_argument("--width", type=int)
    validate.add_argument("--image-dir", help="image folder name, '{split}' is replaced by the split")
    validate.add_argument("--annotation-file")
    validate.add_argument("--pairs-file")
    validate.add_argument("--splits", nargs="+", default=["train", "test"])
    validate.set_defaults(run=_validate)

    # the defaults are FromVideoOptions' (docs/from_video.md explains each rule); the module needs no OpenCV to import
    from emca.data.video import FromVideoOptions

    defaults = FromVideoOptions()
    from_video = commands.add_parser(
        "from-video", help="build a dataset from videos of people: detect, track, crop, annotate, pair"
    )
    from_video.add_argument("videos", type=Path, nargs="+", metavar="VIDEO")
    from_video.add_argument("--out", type=Path, required=True, help="dataset root to write (new or empty)")
    from_video.add_argument(
        "--preset", required=True, help="market (128x64), deepfashion (256x176) or HxW, e.g. 160x80"
    )
    for flag, kind, text in (
        ("--every", int, "read every k-th frame"),
        ("--min-gap", int, "frames between two crops of one identity"),
        ("--test-fraction", float, "of the identities (--split identity) or of each identity's crops (--split time)"),
        ("--min-pose-difference", float, "a pair's mean joint distance, in crop heights"),
        ("--min-keypoint-confidence", float, "MediaPipe visibility: a joint below it is missing; so is a crop whose "
         "12 limb joints average below it"),
        ("--margin", float, "around the person's box on each side, in box heights"),
        ("--max-overlap", float, "box IoU with another person above which a crop is rejected"),
        ("--max-upscale", float, "how much a crop may be enlarged to the preset's size"),
    ):  # fmt: skip
        default = getattr(defaults, flag[2:].replace("-", "_"))
        from_video.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    from_video.add_argument("--split", choices=("identity", "time"), default=defaults.split)
    from_video.add_argument("--overwrite", action="store_true", help="replace a non-empty --out once the new is done")
    from_video.set_defaults(run=_from_video)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
