"""MoA personalisation on several real people, over seeds: does each subject improve while the others stay put?

For each test identity of the ``vtest.avi`` dataset (by default the three with the most crops), each seed and
each setting, ``reproduce/real_pedestrians.py``'s procedure: personalise a pedestrian-trained base on the
earlier half of the identity's crops (``emca train experiment=personalize``), score the later half (every
photo-to-held-out pair; SSIM under the PATN protocol and L1) with the base and with the personalised
generator, and score the other identities' test pairs the same way, with the mean absolute change of their
outputs ([-1, 1] units).

    python reproduce/personalize_real.py --data outputs/real_pedestrians/vtest \\
        --base outputs/seeds/xinggan_small_s0/checkpoints/last.ckpt --runs outputs/moa \\
        --settings default --seeds 0 1 2 --out docs/results

A run whose adapter exists is scored, not retrained; a run already scored (``scores.json``) is read. Prints
the table (per setting and identity: mean and standard deviation over the seeds of each change) and writes
``NAME.csv`` (one row per run) and ``NAME.png`` (bars with the seeds' standard deviation) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from real_pedestrians import LAYOUT, crops_by_identity, personalise

from emca.ablation import bar_panels, mean_and_spread
from emca.data.annotations import read_annotations
from emca.io import atomic_write_text

# setting: emca train overrides of the personalisation (conf/experiment/personalize.yaml is "default")
SETTINGS: dict[str, tuple[str, ...]] = {
    "default": (),
    # the prior branch held harder: 10x the router and preservation weights
    "preserve": ("model.loss.lambda_router=1.0", "model.loss.lambda_preservation=1.0"),
    # a third of the learning rate: fewer photos' details memorised per step
    "slow": ("model.optim.lr=3.0e-4",),
}
CHANGES = {  # column: (what it is, the personalise() keys it is the difference of)
    "subject ΔSSIM": ("subject personalised ssim", "subject base ssim"),
    "subject ΔL1": ("subject personalised l1", "subject base l1"),
    "others ΔSSIM": ("other personalised ssim", "other base ssim"),
}
DRIFT = "other mean |personalised - base|"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the dataset built from vtest.avi")
    parser.add_argument("--base", type=Path, required=True, help="a checkpoint trained on that dataset")
    parser.add_argument("--runs", type=Path, default=Path("outputs/moa"))
    parser.add_argument("--identities", nargs="+", type=int, help="test identities (default: the 3 with most crops)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=["default"], choices=list(SETTINGS))
    parser.add_argument("--iterations", type=int, default=400, help="personalisation iterations")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="where the table goes (default: print only)")
    parser.add_argument("--name", default="moa_real")
    args = parser.parse_args()
    by_identity = crops_by_identity(read_annotations(LAYOUT.annotation_path(args.data, "test")))
    identities = args.identities or sorted(by_identity, key=lambda identity: -len(by_identity[identity]))[:3]
    unknown = sorted(set(identities) - set(by_identity))
    if unknown:
        parser.error(f"--identities {unknown}: not test identities of {args.data} ({sorted(by_identity)})")
    rows = []
    for setting in args.settings:
        for identity in identities:
            for seed in args.seeds:
                workdir = args.runs / setting / f"identity{identity}_s{seed}"
                scores = workdir / "scores.json"
                if not scores.is_file():  # a run already scored is read, not scored again
                    result = personalise(
                        args.data, args.base, workdir, args.iterations, args.threads, identity,
                        (*SETTINGS[setting], f"seed={seed}"),
                    )  # fmt: skip
                    atomic_write_text(scores, json.dumps(result, indent=2))
                result = json.loads(scores.read_text())
                rows.append({
                    "setting": setting, "identity": identity, "seed": seed, "photos": len(by_identity[identity]) // 2,
                    **{column: result[after] - result[before] for column, (after, before) in CHANGES.items()},
                    "others drift": result[DRIFT], "subject base SSIM": result["subject base ssim"],
                })  # fmt: skip
    runs = pd.DataFrame(rows)
    columns = [*CHANGES, "others drift"]
    summary = mean_and_spread(runs, ["setting", "identity"], columns)
    lines = ["| setting | identity | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for (setting, identity), row in summary.iterrows():
        cells = [f"{row[f'{column}_mean']:+.4f} ± {row[f'{column}_std']:.4f}" for column in columns]
        lines.append(f"| {setting} | {identity} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / f"{args.name}.csv", runs.to_csv(index=False))
        labels = [f"{setting}, identity {identity}" for setting, identity in summary.index]
        bar_panels(
            summary, {column: column for column in columns}, labels, args.out / f"{args.name}.png", zero_line=True
        )


if __name__ == "__main__":
    main()
