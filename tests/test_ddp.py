"""Multi-process training through Lightning's DDP (conf/trainer/ddp.yaml), on the CPU with the gloo backend:
two processes split the data and end with the same generator, as gradient averaging requires."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _fake_data import make_dataset
from _tiny_training import iterations, tiny_overrides

from emca.checkpoint import load_generator

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
def test_two_process_ddp_on_cpu_splits_the_data_and_keeps_the_replicas_equal(tmp_path: Path) -> None:
    data_root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(data_root, height=32, width=16)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            *tiny_overrides(data_root, run_dir),
            *iterations(3),
            f"hydra.run.dir={run_dir}",
            "trainer=ddp",
            "trainer.accelerator=cpu",  # gloo
            "trainer.devices=2",
            "trainer.enable_progress_bar=false",
            "model.generator.dropout=0.0",  # the replicas draw their own dropout masks; equality needs none
            "callbacks=[{_target_:_ddp.RankRecord}]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [torch.load(run_dir / f"rank{rank}.pt") for rank in (0, 1)]
    assert [record["world_size"] for record in records] == [2, 2]
    # 3 iterations of batch 4 each: every process trained on its own half of the shuffled pairs
    assert [len(record["names"]) for record in records] == [12, 12]
    assert records[0]["names"] != records[1]["names"]
    # gradients are averaged across the processes, so both replicas took the same steps from the same start
    for name, tensor in records[0]["generator"].items():
        assert torch.equal(tensor, records[1]["generator"][name]), name
    generator, _ = load_generator(run_dir / "checkpoints" / "last.ckpt")  # written once, by rank 0
    for name, tensor in generator.state_dict().items():
        assert torch.equal(tensor, records[0]["generator"][name]), name
