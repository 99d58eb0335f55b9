"""The XingGAN++ ablation: the Hydra sweep end to end (fast_dev_run), and gathering runs into a table."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _fake_data import make_dataset
from PIL import Image

from emca.ablation import collect_runs, gather, main, markdown_table, summarise
from emca.errors import DataError
from emca.networks.generator import XingGenerator

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ["baseline", "multi_scale", "enhanced_attention", "dense_fusion", "full"]


def test_sweep_runs_every_variant_and_seed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_dataset(root, height=32, width=16)
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            "experiment=ablation",
            f"data.root={root}",
            "data.height=32",
            "data.width=16",
            "data.batch_size=4",
            "data.val_subset=4",
            "data.generate_if_missing=false",
            "+trainer.fast_dev_run=true",
            "model.generator.ngf=4",
            "model.generator.num_blocks=2",
            "model.generator.multi_scale.window_sizes=[3]",
            "model.discriminator.ndf=4",
            f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=${model.name}-seed${seed}",
        ],  # the default names runs by all overrides, paths too
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in sweep.iterdir() if path.is_dir()) == sorted(
        f"{variant}-seed{seed}" for variant in VARIANTS for seed in (0, 1)
    )
    summaries = {path.parent.name: json.loads(path.read_text()) for path in sweep.glob("*/run_summary.json")}
    assert len(summaries) == 10
    for name, summary in summaries.items():
        assert f"{summary['variant']}-seed{summary['seed']}" == name
        assert -1 <= summary["metrics"]["val/ssim"] <= 1 and summary["metrics"]["val/l1"] > 0
        assert summary["iterations"] == 1 and summary["mean_step_seconds"] > 0
    parameters = {name.split("-")[0]: summary["generator_parameters"] for name, summary in summaries.items()}
    assert parameters["baseline"] == sum(p.numel() for p in XingGenerator(ngf=4, num_blocks=2).parameters())
    assert all(parameters[variant] > parameters["baseline"] for variant in VARIANTS[1:])

    paths = gather(sweep)
    table = paths["ablation.md"].read_text()
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == ["variant", *VARIANTS]
    with Image.open(paths["ablation.png"]) as chart:
        assert chart.format == "PNG"
    assert "Each run trained 1 iterations." in table and "**Warning: runs of 1 iterations" in table


def write_run(sweep: Path, variant: str, seed: int, ssim: float, l1: float, lpips: float | None = None) -> None:
    run = sweep / f"{variant}-seed{seed}"
    run.mkdir(parents=True)
    (run / "run_summary.json").write_text(
        json.dumps(
            {
                "variant": variant,
                "seed": seed,
                "metrics": {"val/ssim": ssim, "val/l1": l1, "train/l1": 9.0},
                "generator_parameters": 1000 + len(variant),
                "iterations": 5,
                "mean_step_seconds": 0.5 + seed,
            }
        )
    )
    if lpips is not None:  # an evaluation run into the run directory
        (run / "eval").mkdir()
        (run / "eval" / "metrics.json").write_text(json.dumps({"protocol": "gfla", "metrics": {"lpips": lpips}}))


def test_gather_reports_mean_and_std_over_seeds(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    values = {
        "full": [(0.70, 0.20, 0.30), (0.50, 0.25, 0.10)],
        "baseline": [(0.40, 0.30, 0.35), (0.44, 0.31, 0.33)],
        "custom": [(0.10, 0.90, 0.50)],
    }
    for variant, runs in values.items():
        for seed, (ssim, l1, lpips) in enumerate(runs):
            write_run(sweep, variant, seed, ssim, l1, lpips)
    summary = summarise(collect_runs(sweep))
    assert list(summary.index) == ["baseline", "full", "custom"]  # the sweep's order, then others
    for variant, runs in values.items():
        for column, index in (("SSIM", 0), ("L1", 1), ("LPIPS", 2)):
            numbers = [run[index] for run in runs]
            assert summary.loc[variant, f"{column}_mean"] == pytest.approx(statistics.fmean(numbers))
            spread = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
            assert summary.loc[variant, f"{column}_std"] == pytest.approx(spread)
    assert summary.loc["full", "seeds"] == 2 and summary.loc["custom", "seeds"] == 1
    assert summary.loc["full", "step_seconds_mean"] == pytest.approx(1.0)
    assert "FID_mean" not in summary  # never evaluated: no column

    out = tmp_path / "report"
    main([str(sweep), "--out", str(out)])
    table = (out / "ablation.md").read_text()
    assert "| full | 2 | 0.6000 ± 0.1414 | 0.2250 ± 0.0354 | 0.2000 ± 0.1414 | 1,004 | 1.000 |" in table
    assert "FID" not in table
    assert "Each run trained 5 iterations." in table and "**Warning: runs of 5 iterations" in table
    assert (out / "ablation.png").is_file() and (out / "ablation_runs.csv").read_text().count(
        "\n"
    ) == 1 + 5  # header, runs


def test_gather_errors_name_the_directory_or_file(tmp_path: Path, capsys) -> None:
    with pytest.raises(DataError, match="No 'run_summary.json' under .*empty"):
        collect_runs(tmp_path / "empty")
    write_run(tmp_path / "sweep", "full", 0, 0.5, 0.2)
    broken = tmp_path / "sweep" / "broken-seed0" / "run_summary.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    with pytest.raises(DataError, match="broken-seed0"):
        collect_runs(tmp_path / "sweep")
    broken.write_text(json.dumps({"seed": 0, "metrics": {}}))
    with pytest.raises(DataError, match="no field 'variant'"):
        collect_runs(tmp_path / "sweep")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nothing_here")])
    assert exit_info.value.code == 2 and "nothing_here" in capsys.readouterr().err


def test_table_columns_follow_what_the_runs_hold() -> None:
    """Parameters and step time appear only when the runs have them; means over the seeds, not copied values."""
    rows = [{"variant": "a", "seed": seed, "SSIM": ssim, "parameters": 1200} for seed, ssim in enumerate([0.4, 0.5])]
    without_time = markdown_table(summarise(pd.DataFrame(rows)))
    assert "step time" not in without_time and "| 1,200 |" in without_time
    assert f"{statistics.mean([0.4, 0.5]):.4f} ± {statistics.stdev([0.4, 0.5]):.4f}" in without_time
    timed = [{**row, "step_seconds": seconds} for row, seconds in zip(rows, [0.5, 0.75], strict=True)]
    assert "step time (s)" in markdown_table(summarise(pd.DataFrame(timed))).splitlines()[0]
    assert "| 0.625 |" in markdown_table(summarise(pd.DataFrame(timed)))
