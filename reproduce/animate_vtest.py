"""``emca animate`` on real pedestrians: a test person's crop of ``vtest.avi`` moved by another pedestrian of the
clip, with the reduced XingGAN trained on the clip's people (``reproduce/real_pedestrians.py``).

    python reproduce/animate_vtest.py --ckpt outputs/real_pedestrians/xinggan/checkpoints/last.ckpt \\
        --source outputs/real_pedestrians/vtest/test/0011_c1_000094.png --out docs/results

Writes ``animate_vtest.mp4`` (driving frame | skeleton | result), ``animate_vtest_report.json`` and
``animate_vtest_strip.png`` (the source photo, then skeleton and result at five moments) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from emca.animate import EXAMPLE_VIDEO
from emca.data.video.stream import read_frames
from emca.io import atomic_save_image, atomic_write_text
from emca.visualize import enlarged

MOMENTS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--source", required=True, help="a photo of the person to animate")
    parser.add_argument("--driving", default=str(EXAMPLE_VIDEO))
    parser.add_argument("--person", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emca-animate-") as folder:
        video = Path(folder) / "animate_vtest.mp4"
        subprocess.run(
            [sys.executable, "-m", "emca", "animate", f"ckpt={args.ckpt}", f"source={args.source}",
             f"driving={args.driving}", f"person={args.person}", f"out={video}", "side_by_side=true", "trim=true"],
            check=True,
        )  # fmt: skip
        report = json.loads(video.with_name("animate_vtest_report.json").read_text())
        report["output"]["video"] = str(args.out / "animate_vtest.mp4")  # where the side-by-side is kept
        side = list(read_frames(video.with_name("animate_vtest_side_by_side.mp4")))
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video.with_name("animate_vtest_side_by_side.mp4"), args.out / "animate_vtest.mp4")
    atomic_write_text(args.out / "animate_vtest_report.json", json.dumps(report, indent=2) + "\n")
    # each side-by-side frame ends with skeleton | result, each the model's width times the enlargement
    height = side[0].shape[0]
    factor = height // report["output"]["model_size"][0]
    picture_width = report["output"]["model_size"][1] * factor
    source = np.asarray(enlarged(Image.open(args.source).convert("RGB"), height=height))[:height]
    moments = np.linspace(0, len(side) - 1, MOMENTS + 2).astype(int)[1:-1]
    columns = [source, np.full((height, 8, 3), 255, np.uint8)]
    for moment in moments:
        columns.append(side[moment][:, -2 * picture_width :])
        columns.append(np.full((height, 8, 3), 255, np.uint8))
    atomic_save_image(Image.fromarray(np.concatenate(columns[:-1], axis=1)), args.out / "animate_vtest_strip.png")
    print(f"wrote {args.out / 'animate_vtest.mp4'}, the report and the strip (frames {list(moments)})")


if __name__ == "__main__":
    main()
