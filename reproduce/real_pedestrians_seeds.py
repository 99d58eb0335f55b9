"""XingGAN, each XingGAN++ addition alone (each in its two readings), and XingGAN++ on real pedestrians over
seeds: the reduced models of ``reproduce/real_pedestrians.py`` (1,200 iterations at batch 8 on the 25 training
identities of ``vtest.avi``, 128x64), each trained with several seeds, scored on the 310 test pairs (SSIM,
mask-SSIM, L1, PSNR, FID against the training set, PCKh), with parameters, FLOPs per image and CPU seconds per
iteration; mean and spread per variant.

    python reproduce/real_pedestrians_seeds.py --data outputs/real_pedestrians/vtest --runs outputs/seeds \\
        --seeds 0 1 2 --out docs/results

A run already finished (its ``train.log`` ends with "training finished") is not trained again, and a run already
scored is not scored again. Training uses one thread per run (run two at a time on two cores with ``--variants``).
Prints the table (mean and standard deviation per variant, as ``emca ablation`` writes it) and writes
``NAME.png`` (bars with the seeds' standard deviation) and ``NAME.csv`` (one row per run) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from emca.ablation import bar_chart, markdown_table, summarise
from emca.checkpoint import load_generator
from emca.io import atomic_write_text

# variant: (label, model config, overrides). The single-addition variants and "full, 2 blocks" share XingGAN's
# reduced base (ngf 16, 2 Xing blocks) so that each differs from the baseline by one addition; xingganpp_small
# is the preset as it ships (3 blocks), xingganpp_first the same with the readings it shipped with first
ALONE = "model.generator.num_blocks=2"
OFF = {
    "multi_scale": "model.generator.multi_scale.enabled=false",
    "enhanced": "model.generator.enhanced_attention.enabled=false",
    "dense": "model.generator.dense_fusion.enabled=false",
}
FIRST_READINGS = (  # the readings XingGAN++ shipped with until the second ones were measured
    "model.generator.multi_scale.pool_factors=[2,4]",
    "model.generator.multi_scale.pyramid_factors=[]",
    "model.generator.enhanced_attention.branches=[pool,window]",
    "model.generator.dense_fusion.mode=concat",
)
VARIANTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "xinggan_small": ("XingGAN (reduced)", "xinggan_small", ()),
    "multi_scale_only": ("+ multi-scale only", "xingganpp_small",
                         (ALONE, *FIRST_READINGS, OFF["enhanced"], OFF["dense"])),
    "multi_scale_pyramid_only": ("+ multi-scale (pyramid) only", "xingganpp_small",
                                 (ALONE, OFF["enhanced"], OFF["dense"], "model.generator.multi_scale.pool_factors=[]",
                                  "model.generator.multi_scale.pyramid_factors=[2,4]")),
    # without multi-scale the only branch is the full one, so EA refines that
    "enhanced_only": ("+ enhanced attention only", "xingganpp_small",
                      (ALONE, OFF["multi_scale"], "model.generator.enhanced_attention.branches=[full]", OFF["dense"])),
    "enhanced_columns_only": ("+ enhanced attention (columns) only", "xingganpp_small",
                              (ALONE, OFF["multi_scale"], "model.generator.enhanced_attention.branches=[full]",
                               "model.generator.enhanced_attention.over=columns", OFF["dense"])),
    "dense_only": ("+ dense fusion only", "xingganpp_small",
                   (ALONE, *FIRST_READINGS, OFF["multi_scale"], OFF["enhanced"])),
    "dense_gated_only": ("+ dense fusion (gated) only", "xingganpp_small",
                         (ALONE, OFF["multi_scale"], OFF["enhanced"], "model.generator.dense_fusion.mode=gated")),
    "xingganpp_2blocks": ("XingGAN++ (reduced, 2 blocks)", "xingganpp_small", (ALONE,)),
    "xingganpp_first": ("XingGAN++ (reduced, 3 blocks, first readings)", "xingganpp_small", FIRST_READINGS),
    "xingganpp_small": ("XingGAN++ (reduced, 3 blocks)", "xingganpp_small", ()),
    "xingganpp_columns": ("XingGAN++ (reduced, 3 blocks, EA columns)", "xingganpp_small",
                          ("model.generator.enhanced_attention.over=columns",)),
}  # fmt: skip
METRICS = "[ssim,mask_ssim,l1,psnr,fid,pckh,pose_detected]"
ITERATIONS, CONSTANT = 1200, 900  # real_pedestrians.py's budget: 900 constant + 300 decaying
FINISHED = "training finished"


def emca(*arguments: str, threads: int | None = None) -> None:
    environment = None if threads is None else {**__import__("os").environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "emca", *arguments], check=True, env=environment)


def train(run: Path, variant: str, seed: int, data: Path) -> None:
    log = run / "train.log"
    if log.is_file() and FINISHED in log.read_text():
        return
    _, model, overrides = VARIANTS[variant]
    emca("train", f"hydra.run.dir={run}", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         f"model={model}", *overrides, "data=market", f"data.root={data}", "data.batch_size=8", "data.num_workers=0",
         "data.pin_memory=false", "data.val_subset=64", f"model.optim.constant_iterations={CONSTANT}",
         f"model.optim.decay_iterations={ITERATIONS - CONSTANT}", "trainer.check_val_every_n_epoch=5",
         f"seed={seed}", "threads=1", threads=1)  # fmt: skip


def score(run: Path) -> dict[str, float]:
    report = run / "eval" / "metrics.json"
    if not report.is_file():
        emca("eval", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"metrics={METRICS}", f"out={run / 'eval'}")
    return json.loads(report.read_text())["metrics"]


def seconds_per_iteration(run: Path) -> float:
    """The last progress line's s/iteration (the run's mean since its first iteration)."""
    speeds = re.findall(r"([0-9.]+) s/iteration", (run / "train.log").read_text())
    return float(speeds[-1])


def size_and_flops(run: Path) -> tuple[int, int]:
    generator, hyper = load_generator(run / "checkpoints" / "last.ckpt")
    height, width = hyper["data"]["height"], hyper["data"]["width"]
    inputs = (torch.zeros(1, 3, height, width), torch.zeros(1, 18, height, width), torch.zeros(1, 18, height, width))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        generator(*inputs)
    return sum(p.numel() for p in generator.parameters()), counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the dataset built from vtest.avi")
    parser.add_argument("--runs", type=Path, default=Path("outputs/seeds"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="where the table goes (default: only train)")
    parser.add_argument("--name", default="xingganpp_real_seeds", help="the chart's and the CSV's file name")
    parser.add_argument(
        "--no-step-seconds",
        action="store_true",
        help="leave the runs' seconds per iteration out of the table and chart (runs that were paused, or shared "
        "the CPU with other work, timed that and not the model)",
    )
    args = parser.parse_args()
    for variant in args.variants:
        for seed in args.seeds:
            train(args.runs / f"{variant}_s{seed}", variant, seed, args.data)
    if args.out is None:
        return
    rows = []
    for variant in args.variants:
        for seed in args.seeds:
            run = args.runs / f"{variant}_s{seed}"
            metrics = score(run)
            parameters, flops = size_and_flops(run)
            rows.append({
                "variant": VARIANTS[variant][0], "seed": seed, "SSIM": metrics["ssim"],
                "mask-SSIM": metrics["mask_ssim"], "L1": metrics["l1"], "PSNR": metrics["psnr"],
                "FID": metrics.get("fid"), "PCKh": metrics["pckh"],
                "person found": metrics["pose_detected"], "parameters": parameters, "GFLOP": flops / 1e9,
                "step_seconds": seconds_per_iteration(run), "iterations": ITERATIONS, "run_dir": str(run),
            })  # fmt: skip
    runs = pd.DataFrame(rows)
    if args.no_step_seconds:
        runs = runs.drop(columns="step_seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{args.name}.csv", runs.to_csv(index=False))
    summary = summarise(runs)
    bar_chart(summary, args.out / f"{args.name}.png")
    print(markdown_table(summary))
    print(runs.groupby("variant")[["GFLOP"]].mean())


if __name__ == "__main__":
    main()
