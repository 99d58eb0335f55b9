"""Copy-the-source baseline on the synthetic test pairs: how hard is the default synthetic dataset?

Generates the default dataset (in a temporary directory, or under ``--root`` when given and not there
yet) and prints, over the test pairs, the mean SSIM and L1 of predicting the target with the source
image unchanged, and the mean displacement of the joints visible in both images. A model that learned
nothing scores these numbers; the target compared with itself scores SSIM 1 and L1 0.

    python bench/synthetic_baseline.py [--root DIR] [--height 64 --width 48] [--seed 0]

SSIM is the PATN protocol's skimage ``structural_similarity`` (Gaussian window, sigma 1.5, population
covariance) on uint8 images with data_range 255; L1 is the mean absolute difference in [-1, 1] units.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

from emca.data.annotations import read_annotations, read_pairs
from emca.data.keypoints import visible
from emca.data.synthetic import DEFAULT_HEIGHT, DEFAULT_WIDTH, generate_synthetic_dataset


def copy_source_scores(root: Path) -> dict[str, float]:
    """Mean SSIM, L1 ([-1, 1] units) and joint displacement (px) of copy-the-source over the test pairs."""
    annotations = read_annotations(root / "synthetic-annotation-test.csv")
    ssims, l1s, displacements = [], [], []
    for source_name, target_name in read_pairs(root / "synthetic-pairs-test.csv"):
        source = np.asarray(Image.open(root / "test" / source_name).convert("RGB"))
        target = np.asarray(Image.open(root / "test" / target_name).convert("RGB"))
        ssims.append(
            structural_similarity(
                target,
                source,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                channel_axis=-1,
                data_range=255,
            )
        )
        l1s.append(np.abs(source.astype(np.float64) - target.astype(np.float64)).mean() / 127.5)
        source_keypoints, target_keypoints = annotations[source_name], annotations[target_name]
        both = visible(source_keypoints) & visible(target_keypoints)
        displacements.append(np.linalg.norm(source_keypoints[both] - target_keypoints[both], axis=1).mean())
    return {
        "pairs": len(ssims),
        "ssim": float(np.mean(ssims)),
        "l1": float(np.mean(l1s)),
        "joint_displacement_px": float(np.mean(displacements)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="dataset directory (generated if it does not exist)")
    parser.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch) / "synthetic"
        if not root.exists():
            generate_synthetic_dataset(root, height=args.height, width=args.width, seed=args.seed)
        scores = copy_source_scores(root)
    print(
        f"copy-source baseline on {scores['pairs']} test pairs "
        f"({args.height}x{args.width}, seed {args.seed}):"
    )
    print(f"  SSIM {scores['ssim']:.4f}   (target vs itself: 1)")
    print(f"  L1   {scores['l1']:.4f}   ([-1, 1] units; target vs itself: 0)")
    print(f"  mean joint displacement between pair members: {scores['joint_displacement_px']:.2f} px")


if __name__ == "__main__":
    main()
