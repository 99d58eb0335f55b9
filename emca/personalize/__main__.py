"""Apply a MoA adapter to its base generator; save the per-layer router maps.

    emca personalize generate --ckpt BASE.ckpt --adapter RUN/adapter.pt \\
        --annotations subject/annotations.csv --source anna_01.png --target anna_05.png --out result.png
    emca personalize router-maps ... --out maps/      # maps/generated.png, block0_sa.png, ...

``--ckpt`` is the base model the adapter was trained on (a checkpoint, exported folder or ``hf://OWNER/NAME``).

The source photo is read from ``--images`` (default: the annotation file's folder); both keypoint sets come
from the annotation CSV (the target only needs a row there). ``--scale`` in [0, 1] scales the personalised
routing: 0 is the base generator exactly, 1 the trained personalisation. A router map is the weight of the
personalised branch per feature pixel (white = personalised, black = prior), one PNG per block and
direction (``sa``: shape-guided appearance, ``as``: appearance-guided shape), upsampled to the image size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch.nn.functional as F
from PIL import Image

from emca.cli import renamed_flag, user_errors
from emca.data.annotations import read_annotations
from emca.data.dataset import load_image
from emca.errors import DataError
from emca.io import atomic_save_image
from emca.personalize.moa import PERSONAL, PersonalizedGenerator
from emca.pipeline import PoseTransferPipeline

DIRECTION_NAMES = ("sa", "as")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="emca personalize", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command, out_help in (
        ("generate", "the generated image (PNG)"),
        ("router-maps", "a folder for generated.png and the per-block router maps"),
    ):
        sub = commands.add_parser(command)
        sub.add_argument("--ckpt", required=True, help="the base model the adapter was trained on")
        renamed_flag(sub, "--base-ckpt", "--ckpt")
        sub.add_argument("--adapter", required=True, type=Path)
        sub.add_argument("--annotations", required=True, type=Path, help="PATN annotation CSV with both names")
        sub.add_argument("--images", type=Path, help="folder of the source photo (default: the CSV's folder)")
        sub.add_argument("--source", required=True, help="source photo name")
        sub.add_argument("--target", required=True, help="target name (its keypoints give the pose)")
        sub.add_argument("--scale", type=float, default=1.0, help="personalised routing scale in [0, 1]")
        sub.add_argument("--out", required=True, type=Path, help=out_help)
    return parser.parse_args(argv)


def router_map_images(personalized: PersonalizedGenerator, height: int, width: int) -> dict[str, Image.Image]:
    """The personalised weight of every block and direction from the latest forward (batch item 0), as
    grayscale images of the output size: {'block0_sa': ..., 'block0_as': ..., ...}."""
    maps = {}
    for index, mixture in enumerate(personalized.mixtures):
        weights = mixture.routing[:, PERSONAL:].chunk(2, dim=0)  # SA rows, AS rows: (B, 1, h, w) each
        for direction, weight in zip(DIRECTION_NAMES, weights, strict=True):
            upsampled = F.interpolate(weight[:1], size=(height, width), mode="nearest")[0, 0]
            maps[f"block{index}_{direction}"] = Image.fromarray(upsampled.mul(255).round().byte().cpu().numpy())
    return maps


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with user_errors():
        annotations = read_annotations(args.annotations)
        for role, name in (("source", args.source), ("target", args.target)):
            if name not in annotations:
                raise DataError(f"{args.annotations}: no row for the {role} '{name}'; add its keypoints.")
        pipeline = PoseTransferPipeline.from_pretrained(args.ckpt, args.adapter, args.scale, device="cpu")
        height, width = pipeline.size
        source = load_image((args.images or args.annotations.parent) / args.source, height, width)
        generated = pipeline(source[None], [annotations[args.source]], [annotations[args.target]])
        result = pipeline.to_pil(generated)[0]
        if args.command == "generate":
            atomic_save_image(result, args.out)
            print(f"wrote {args.out}")
            return
        atomic_save_image(result, args.out / "generated.png")
        personalized = pipeline.generator  # a PersonalizedGenerator: its routing is from the forward above
        for name, image in router_map_images(personalized, height, width).items():
            atomic_save_image(image, args.out / f"{name}.png")
        print(f"wrote generated.png and {2 * len(personalized.mixtures)} router maps to {args.out}")


if __name__ == "__main__":
    main()
