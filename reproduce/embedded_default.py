"""The embedded default, measured: train `emca train` (or take a checkpoint) and compare it with
copying the source image, on the synthetic test split, under the PATN protocol (SSIM) and L1.

    python reproduce/embedded_default.py                      # trains the default first (timed)
    python reproduce/embedded_default.py --ckpt RUN/checkpoints/best.ckpt

Copy-the-source is scored by the same evaluator as the model: it is the "generator" that returns its
source image. Also printed: the mean displacement of the joints visible in both images of a pair, i.e. how
far the poses move. Target compared with itself: SSIM 1, L1 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from torch import Tensor

from emca.checkpoint import find_latest_checkpoint
from emca.data.dataset import PoseTransferDataset, make_layout
from emca.data.keypoints import visible
from emca.evaluate import evaluate

REPO = Path(__file__).resolve().parents[1]


def copy_source(source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> Tensor:
    return source_image


def score(out_dir: Path, ckpt: Path | None) -> dict[str, float]:
    overrides = [f"out={out_dir}", "metrics=[ssim,l1]", "device=cpu"]
    if ckpt is not None:
        overrides.append(f"ckpt={ckpt}")
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("eval", overrides=overrides)
    return evaluate(cfg, generator=None if ckpt else copy_source)["metrics"]


def joint_displacement(root: Path, height: int, width: int) -> float:
    dataset = PoseTransferDataset(root, make_layout("synthetic", height, width), "test", progress=False)
    moves = []
    for source_name, target_name in dataset.pairs:
        source, target = dataset.annotations[source_name], dataset.annotations[target_name]
        both = visible(source) & visible(target)
        moves.append(np.linalg.norm(source[both] - target[both], axis=1).mean())
    return float(np.mean(moves))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="score this checkpoint instead of training the default")
    args = parser.parse_args()
    os.chdir(REPO)  # the configs' data roots are relative to the repository
    ckpt, training_seconds = args.ckpt, None
    if ckpt is None:
        started = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "train.py")], cwd=REPO, check=True)
        training_seconds = time.perf_counter() - started
        ckpt = find_latest_checkpoint(REPO / "outputs" / "train")
    with tempfile.TemporaryDirectory() as scratch:
        model = score(Path(scratch) / "model", ckpt)
        baseline = score(Path(scratch) / "copy_source", None)
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        data = compose("train", overrides=["run_dir=."]).data
    print("\nembedded default on the synthetic test split (PATN SSIM, L1 in [-1, 1] units)")
    if training_seconds is not None:
        print(f"  training time (emca train, wall clock): {training_seconds / 60:.1f} min")
    print(f"  checkpoint: {ckpt}")
    print(f"  {'':12s} {'SSIM':>8s} {'L1':>8s}")
    print(f"  {'model':12s} {model['ssim']:8.4f} {model['l1']:8.4f}")
    print(f"  {'copy-source':12s} {baseline['ssim']:8.4f} {baseline['l1']:8.4f}")
    print(f"  SSIM gain {model['ssim'] - baseline['ssim']:+.4f}, L1 change {model['l1'] - baseline['l1']:+.4f}")
    displacement = joint_displacement(REPO / data.root, data.height, data.width)
    print(f"  mean joint displacement within a test pair: {displacement:.1f} px")


if __name__ == "__main__":
    main()
