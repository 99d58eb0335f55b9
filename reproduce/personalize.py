"""MoA personalisation acceptance on the synthetic dataset: does a subject get better, and others stay put?

1. Generates the synthetic dataset (default identities, 32x24 images so that a base trains in a few CPU
   minutes) and trains a base model on its training identities (by default the reduced XingGAN of
   conf/model/xinggan_small.yaml with its settings, ``--base-model xingganpp_small`` for XingGAN++; 800
   iterations, one CPU thread) unless ``--ckpt`` is given.
2. Picks the held-out test identity with the most texture on the person (mean absolute Laplacian inside the
   person masks) and renders it with ``emca.data.synthetic.render_identity`` in ``--photos`` + ``--held-out``
   poses: the first ``--photos`` are the subject's photos, the rest are poses no training run has seen.
3. Personalises the base model on the photos (``emca train experiment=personalize``).
4. Prints, over every (photo, held-out pose) pair of the subject, SSIM (PATN protocol: skimage, Gaussian
   window, uint8) and L1 ([-1, 1] units) of the base and the personalised generator against the truth; and,
   over the test pairs of the other test identities, the mean absolute difference between the personalised
   and the base generator's outputs ([-1, 1] units), with their SSIM for scale.

    python reproduce/personalize.py [--workdir DIR] [--ckpt CKPT] [--base-model xinggan_small]
                                [--base-iterations 800] [--iterations 600]
                                [emca train overrides for the personalisation, e.g. model.optim.lr=1e-3]
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
import torch
from PIL import Image
from scipy.ndimage import laplace
from skimage.metrics import structural_similarity

from emca.data.annotations import read_annotations, read_pairs, write_annotations
from emca.data.keypoints import REQUIRED_FOR_PAIRS, visible
from emca.data.skeleton import person_mask
from emca.data.synthetic import (
    DEFAULT_NUM_TEST_IDENTITIES,
    DEFAULT_NUM_TRAIN_IDENTITIES,
    generate_synthetic_dataset,
    render_identity,
)
from emca.metrics.images import to_uint8
from emca.personalize.adapter import adapter_path_in
from emca.pipeline import PoseTransferPipeline

REPO = Path(__file__).resolve().parents[1]
SEED = 0


def run_train(run_dir: Path, threads: int, *overrides: str) -> None:
    """``emca train OVERRIDES`` with its run directory at ``run_dir``, on ``threads`` CPU threads (these
    small convolutions run fastest on one thread of a shared machine)."""
    subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            f"hydra.run.dir={run_dir}",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            *overrides,
        ],
        cwd=REPO,
        check=True,
        env=os.environ | {"OMP_NUM_THREADS": str(threads)},
    )


def texture_score(identity: int, height: int, width: int) -> float:
    """Mean |Laplacian| of the grey image inside the person mask over the identity's dataset poses."""
    scores = []
    for image, keypoints in render_identity(SEED, identity, 6, height, width):
        mask = person_mask(keypoints, height, width, point_radius=height / 32)
        scores.append(np.abs(laplace(image.astype(np.float64).mean(-1)))[mask].mean())
    return float(np.mean(scores))


def write_subject(
    directory: Path, identity: int, photos: int, held_out: int, height: int, width: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Write the first ``photos`` usable renders as the subject directory; return the held-out ones."""
    usable = [
        (image, keypoints)
        for image, keypoints in render_identity(SEED, identity, 3 * (photos + held_out), height, width)
        if visible(keypoints)[list(REQUIRED_FOR_PAIRS)].all()
    ]
    directory.mkdir(parents=True, exist_ok=True)
    annotations = {}
    for index, (image, keypoints) in enumerate(usable[:photos]):
        Image.fromarray(image).save(directory / f"subject_{index:02d}.png")
        annotations[f"subject_{index:02d}.png"] = keypoints
    write_annotations(directory / "annotations.csv", annotations)
    return usable[photos : photos + held_out]


def transfer(pipelines: dict[str, PoseTransferPipeline], pairs: list[tuple[np.ndarray, ...]]) -> dict:
    """Each pipeline on (source image, source keypoints, target image, target keypoints) pairs -> {name: uint8
    images (P, H, W, 3)}, plus 'truth'."""
    sources = torch.stack([PoseTransferPipeline.from_uint8(pair[0]) for pair in pairs])
    source_keypoints, target_keypoints = [pair[1] for pair in pairs], [pair[3] for pair in pairs]
    outputs = {
        name: to_uint8(pipeline(sources, source_keypoints, target_keypoints)).permute(0, 2, 3, 1).numpy()
        for name, pipeline in pipelines.items()
    }
    outputs["truth"] = np.stack([pair[2] for pair in pairs])
    return outputs


def ssim(generated: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean(
            [
                structural_similarity(
                    g, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=255
                )
                for g, t in zip(generated, truth)
            ]
        )
    )


def l1(generated: np.ndarray, truth: np.ndarray) -> float:
    return float(np.abs(generated.astype(np.float64) - truth.astype(np.float64)).mean() / 127.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where data and runs go (default: a temporary directory)")
    parser.add_argument("--ckpt", type=Path, help="a base trained on the default synthetic dataset")
    parser.add_argument("--base-iterations", type=int, default=800)
    parser.add_argument(
        "--base-model", default="xinggan_small", help="conf/model/ preset of the base (e.g. xingganpp_small: XingGAN++)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="base training batch size")
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--iterations", type=int, default=600, help="personalisation iterations")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--held-out", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="extra emca train overrides for the personalisation run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        data_root = workdir / "synthetic"
        if not data_root.exists():
            generate_synthetic_dataset(data_root, args.height, args.width, SEED)
        base_ckpt = args.ckpt
        if base_ckpt is None:
            base_run = workdir / "base"
            constant = args.base_iterations * 3 // 4
            run_train(
                base_run,
                args.threads,
                f"model={args.base_model}",
                f"data.root={data_root}",
                f"data.batch_size={args.batch_size}",
                f"data.height={args.height}",
                f"data.width={args.width}",
                f"model.optim.constant_iterations={constant}",
                f"model.optim.decay_iterations={args.base_iterations - constant}",
                "trainer.check_val_every_n_epoch=100",
            )
            base_ckpt = base_run / "checkpoints" / "last.ckpt"
        base_seconds = time.perf_counter() - started

        test_identities = range(
            DEFAULT_NUM_TRAIN_IDENTITIES, DEFAULT_NUM_TRAIN_IDENTITIES + DEFAULT_NUM_TEST_IDENTITIES
        )
        subject = max(test_identities, key=lambda identity: texture_score(identity, args.height, args.width))
        held_out = write_subject(workdir / "subject", subject, args.photos, args.held_out, args.height, args.width)
        personal_run = workdir / f"personalize_{time.strftime('%H%M%S')}"
        run_train(
            personal_run,
            args.threads,
            "experiment=personalize",
            f"ckpt={base_ckpt}",
            f"data.root={workdir / 'subject'}",
            f"model.optim.iterations={args.iterations}",
            *args.overrides,
        )
        personal_seconds = time.perf_counter() - started - base_seconds

        pipelines = {
            "base": PoseTransferPipeline.from_pretrained(base_ckpt, device="cpu"),
            "personalised": PoseTransferPipeline.from_pretrained(
                base_ckpt, adapter_path_in(personal_run), device="cpu"
            ),
        }
        photos = read_annotations(workdir / "subject" / "annotations.csv")
        subject_pairs = [
            (np.asarray(Image.open(workdir / "subject" / name)), keypoints, target, target_keypoints)
            for name, keypoints in photos.items()
            for target, target_keypoints in held_out
        ]
        subject_outputs = transfer(pipelines, subject_pairs)

        annotations = read_annotations(data_root / "synthetic-annotation-test.csv")
        other_pairs = [
            (
                np.asarray(Image.open(data_root / "test" / source)),
                annotations[source],
                np.asarray(Image.open(data_root / "test" / target)),
                annotations[target],
            )
            for source, target in read_pairs(data_root / "synthetic-pairs-test.csv")
            if not source.startswith(f"id{subject:04d}_")
        ][::4]
        other_outputs = transfer(pipelines, other_pairs)

    print(
        f"\nsubject: test identity {subject} (most texture), {len(photos)} photos, {len(held_out)} held-out poses; "
        f"{len(subject_pairs)} (photo, held-out pose) pairs"
    )
    for name in pipelines:
        print(
            f"  {name:13s} SSIM {ssim(subject_outputs[name], subject_outputs['truth']):.4f}   "
            f"L1 {l1(subject_outputs[name], subject_outputs['truth']):.4f}"
        )
    difference = np.abs(other_outputs["personalised"].astype(np.float64) - other_outputs["base"]) / 127.5
    print(f"other test identities: {len(other_pairs)} pairs")
    print(
        f"  mean |personalised - base| {difference.mean():.4f}  ([-1, 1] units; 95th percentile "
        f"{np.percentile(difference, 95):.4f})"
    )
    for name in pipelines:
        print(
            f"  {name:13s} SSIM {ssim(other_outputs[name], other_outputs['truth']):.4f}   "
            f"L1 {l1(other_outputs[name], other_outputs['truth']):.4f}"
        )
    print(
        f"time: base {base_seconds:.0f} s ({'given' if args.ckpt else f'{args.base_model}, trained'}), "
        f"personalisation {personal_seconds:.0f} s, total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
