"""Gathering an ablation sweep into a table and a chart.

    emca train -m experiment=ablation              # variants x seeds, one run directory each
    emca ablation outputs/multirun/<time>     # -> ablation.md, ablation.png, ablation_runs.csv

Every run directory holds ``run_summary.json`` (written by emca.run_summary.RunSummary: variant, seed,
final val/ssim and val/l1, generator parameters, mean step time). When an evaluation was run into the
run directory (``emca eval ckpt=<run>/checkpoints/best.ckpt out=<run>/eval``), LPIPS and
FID from its ``metrics.json`` join the table. Each metric is reported as mean +- std over the seeds
(std 0 for a single seed).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure  # the object API renders with Agg and never opens a display

from emca.cli import user_errors
from emca.errors import DataError
from emca.figures import save_figure
from emca.io import atomic_write_text
from emca.run_summary import SUMMARY_FILE

# table column -> (where it comes from, which direction is better)
METRICS = {
    "SSIM": ("val/ssim", "higher"),
    "mask-SSIM": ("mask_ssim", "higher"),
    "L1": ("val/l1", "lower"),
    "PSNR": ("psnr", "higher"),
    "LPIPS": ("lpips", "lower"),
    "FID": ("fid", "lower"),
    "PCKh": ("pckh", "higher"),
    "person found": ("pose_detected", "higher"),
}
# the sweep's variants in reading order (conf/ablation/); others follow in order of appearance
VARIANT_ORDER = ("baseline", "multi_scale", "enhanced_attention", "dense_fusion", "full")
EVAL_REPORT = "metrics.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"Cannot read '{path}': {err}. Delete the file or rerun that job.") from err


def collect_runs(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per run under ``sweep_dir``: variant, seed, SSIM, L1 (LPIPS, FID when evaluated),
    parameters, step_seconds, run_dir."""
    sweep_dir = Path(sweep_dir)
    summaries = sorted(sweep_dir.rglob(SUMMARY_FILE))
    if not summaries:
        raise DataError(
            f"No '{SUMMARY_FILE}' under '{sweep_dir}'. Point at the directory of a sweep run with "
            "`emca train -m experiment=ablation` (its RunSummary callback writes one per run), "
            "and let at least one run finish."
        )
    rows = []
    for path in summaries:
        summary = _read_json(path)
        for field in ("variant", "seed", "metrics"):
            if field not in summary:
                raise DataError(
                    f"'{path}' has no field '{field}'; it was not written by emca.run_summary.RunSummary "
                    "with labels {variant, seed}."
                )
        metrics = dict(summary["metrics"])
        for report in sorted(path.parent.rglob(EVAL_REPORT)):  # evaluations run into the run directory
            metrics.update(_read_json(report).get("metrics", {}))
        rows.append(
            {
                "variant": str(summary["variant"]),
                "seed": summary["seed"],
                **{column: metrics.get(key) for column, (key, _) in METRICS.items()},
                "parameters": summary.get("generator_parameters"),
                "step_seconds": summary.get("mean_step_seconds"),
                "iterations": summary.get("iterations"),
                "run_dir": str(path.parent),
            }
        )
    runs = pd.DataFrame(rows)
    return runs.dropna(axis="columns", how="all")


def mean_and_spread(runs: pd.DataFrame, by: str | list[str], columns: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by`` (in order of appearance): ``<column>_mean`` and ``<column>_std`` over its rows (the
    seeds) for each of ``columns``; std 0 where a group has one row."""
    summary = runs.groupby(by, sort=False)[list(columns)].agg(["mean", "std"])
    summary.columns = [f"{column}_{statistic}" for column, statistic in summary.columns]
    return summary.fillna({f"{column}_std": 0.0 for column in columns})


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per variant (rows in VARIANT_ORDER): seeds, and mean / std of every metric, parameters and step time."""
    values = [column for column in (*METRICS, "parameters", "step_seconds") if column in runs]
    summary = mean_and_spread(runs, "variant", values)
    summary.insert(0, "seeds", runs.groupby("variant", sort=False)["seed"].nunique())
    order = [v for v in VARIANT_ORDER if v in summary.index] + [v for v in summary.index if v not in VARIANT_ORDER]
    return summary.loc[order]


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a markdown table, metrics as mean +- std."""
    metrics = [column for column in METRICS if f"{column}_mean" in summary]
    extras = {  # column: (header, format), for the columns the runs hold
        column: spec
        for column, spec in {
            "parameters": ("G parameters", "{:,.0f}"),
            "step_seconds": ("step time (s)", "{:.3f}"),
        }.items()
        if f"{column}_mean" in summary
    }
    header = [
        "variant",
        "seeds",
        *(f"{m} ({'↑' if METRICS[m][1] == 'higher' else '↓'})" for m in metrics),
        *(name for name, _ in extras.values()),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for variant, row in summary.iterrows():
        cells = [str(variant), str(int(row["seeds"]))]
        cells += [f"{row[f'{m}_mean']:.4f} ± {row[f'{m}_std']:.4f}" for m in metrics]
        cells += [form.format(row[f"{column}_mean"]) for column, (_, form) in extras.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(summary: pd.DataFrame, path: str | Path) -> None:
    """One bar panel per metric (and step time), variants side by side with std error bars; PNG."""
    panels = {column: column for column in METRICS if f"{column}_mean" in summary}
    if "step_seconds_mean" in summary:
        panels["step_seconds"] = "step time (s)"
    bar_panels(summary, panels, [str(label) for label in summary.index], path)


PANELS_PER_ROW = 4  # wider rows shrink to unreadable labels on a screen


def bar_panels(
    summary: pd.DataFrame, panels: dict[str, str], labels: Sequence[str], path: str | Path, zero_line: bool = False
) -> None:
    """One panel per ``panels`` column (titled with its value), one bar per row of ``summary`` (``<column>_mean``
    with ``<column>_std`` as the error bar), rows named by ``labels``; PNG. ``zero_line`` marks 0, for changes."""
    columns = min(len(panels), PANELS_PER_ROW)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.6 * columns, 4.0 * rows))
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for axis in axes[len(panels) :]:
        axis.set_visible(False)
    for axis, (column, title) in zip(axes, panels.items(), strict=False):
        axis.bar(range(len(summary)), summary[f"{column}_mean"], yerr=summary[f"{column}_std"], capsize=3,
                 color=[f"C{i}" for i in range(len(summary))])  # fmt: skip
        if zero_line:
            axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(summary)), labels, rotation=35, ha="right", fontsize=8)
        axis.set_title(title)
    figure.tight_layout()
    save_figure(figure, path)


# fewer iterations than this and a table says more about initialisation than about the variants
MEANINGFUL_ITERATIONS = 100


def length_note(runs: pd.DataFrame) -> str:
    """How long the runs trained; a loud warning when they were too short to compare (e.g. a fast_dev_run)."""
    if "iterations" not in runs or runs["iterations"].isna().all():
        return ""
    shortest, longest = int(runs["iterations"].min()), int(runs["iterations"].max())
    span = f"{shortest}" if shortest == longest else f"{shortest} to {longest}"
    note = f"Each run trained {span} iterations.\n\n"
    if shortest < MEANINGFUL_ITERATIONS:
        note += (
            f"**Warning: runs of {shortest} iterations are a check that the sweep runs, not a comparison; "
            "their figures mostly reflect the initialisation.**\n\n"
        )
    return note


def gather(sweep_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ablation.md, ablation.png and ablation_runs.csv for a sweep; returns their paths."""
    out_dir = Path(out_dir or sweep_dir)
    runs = collect_runs(sweep_dir)
    summary = summarise(runs)
    paths = {name: out_dir / name for name in ("ablation.md", "ablation.png", "ablation_runs.csv")}
    atomic_write_text(
        paths["ablation.md"], f"# Ablation: {Path(sweep_dir)}\n\n" + length_note(runs) + markdown_table(summary)
    )
    bar_chart(summary, paths["ablation.png"])
    atomic_write_text(paths["ablation_runs.csv"], runs.to_csv(index=False))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="emca ablation", description="Gather an ablation sweep into a markdown table and a bar chart."
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory (outputs/multirun/<time>)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the files (default: sweep_dir)")
    args = parser.parse_args(argv)
    with user_errors():
        paths = gather(args.sweep_dir, args.out)
        print(paths["ablation.md"].read_text(encoding="utf-8"))
        print("wrote " + ", ".join(str(path) for path in paths.values()))


if __name__ == "__main__":
    main()
