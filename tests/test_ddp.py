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
from _tiny_training import iterations, stop_at, tiny_overrides

from emca.checkpoint import load_generator
from emca.module import PoseTransferModule

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def ddp_train(data_root: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """The tiny config as two processes on the CPU (gloo), each recording itself (tests/_ddp.py)."""
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            *tiny_overrides(data_root, run_dir),
            f"hydra.run.dir={run_dir}",
            "trainer=ddp",
            "trainer.accelerator=cpu",  # gloo
            "trainer.devices=2",
            "trainer.enable_progress_bar=false",
            "model.generator.dropout=0.0",  # the replicas draw their own dropout masks; equality needs none
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )


def assert_replicas_equal(records: list[dict]) -> None:
    # gradients are averaged across the processes, so both replicas took the same steps from the same start
    for name, tensor in records[0]["generator"].items():
        assert torch.equal(tensor, records[1]["generator"][name]), name


@pytest.mark.slow
def test_two_process_ddp_splits_the_data_keeps_the_replicas_equal_and_resumes(tmp_path: Path) -> None:
    """Two processes stopped after 2 of 6 iterations, then resumed from last.ckpt: they continue to the end
    together, each on its own half of the shuffled pairs, with equal replicas and equal validation metrics."""
    data_root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(data_root, height=32, width=16)
    stopped = ddp_train(data_root, run_dir, *iterations(6), stop_at(2))
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2 * PoseTransferModule.optimizer_steps_per_iteration
    resumed = ddp_train(data_root, run_dir, *iterations(6), f"resume={last}", "callbacks=[{_target_:_ddp.RankRecord}]")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = [torch.load(run_dir / f"rank{rank}.pt") for rank in (0, 1)]
    assert [record["world_size"] for record in records] == [2, 2]
    assert [record["global_step"] for record in records] == [6 * PoseTransferModule.optimizer_steps_per_iteration] * 2
    # the 4 iterations after the resume, of batch 4 each: every process trained on its own half of the pairs
    assert [len(record["names"]) for record in records] == [16, 16]
    assert records[0]["names"] != records[1]["names"]
    assert_replicas_equal(records)
    # validation metrics are reduced over both processes' images: both ranks log the same values
    assert records[0]["validation"] and records[0]["validation"] == records[1]["validation"]
    generator, _ = load_generator(last)  # written once, by rank 0
    for name, tensor in generator.state_dict().items():
        assert torch.equal(tensor, records[0]["generator"][name]), name
    assert not list(run_dir.glob("**/rank1*.ckpt"))


CLUSTERS = {
    # srun python train.py trainer=ddp trainer.num_nodes=2 trainer.devices=2: the 4th task, on the 2nd node
    "SLURMEnvironment": {
        "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "42",
        "SLURM_NODEID": "1", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODELIST": "node[1-2]",
    },
    # torchrun --nnodes 2 --nproc-per-node 2 train.py trainer=ddp ...: the same process
    "TorchElasticEnvironment": {
        "TORCHELASTIC_RUN_ID": "run", "RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1", "WORLD_SIZE": "4",
        "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "node1", "MASTER_PORT": "29500",
    },
}  # fmt: skip


@pytest.fixture()
def isolated_ranks():  # noqa: ANN201
    """Building a trainer under a cluster's variables makes Lightning export more of them (LOCAL_RANK, NODE_RANK,
    ...) and set its process-wide rank; both are put back, or later runs would log as rank 3 (that is, not at all)."""
    from lightning_fabric.utilities import rank_zero as fabric_rank_zero
    from pytorch_lightning.utilities import rank_zero as lightning_rank_zero

    environment = dict(os.environ)
    ranks = [getattr(module.rank_zero_only, "rank", 0) for module in (fabric_rank_zero, lightning_rank_zero)]
    yield
    os.environ.clear()
    os.environ.update(environment)
    for module, rank in zip((fabric_rank_zero, lightning_rank_zero), ranks, strict=True):
        module.rank_zero_only.rank = rank


@pytest.mark.parametrize("environment", sorted(CLUSTERS))
@pytest.mark.usefixtures("isolated_ranks")
def test_multi_node_launchers_are_recognised(environment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """conf/trainer/ddp.yaml with 2 nodes of 2 processes, as the README's SLURM and torchrun recipes start it:
    Lightning finds the cluster environment and this process's ranks (the trainer is built, nothing runs)."""
    from hydra.utils import instantiate

    from emca.config import compose_train

    for name in ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in CLUSTERS[environment].items():
        monkeypatch.setenv(name, value)
    trainer_config = compose_train(
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=2"]
    )
    trainer_config = {key: value for key, value in trainer_config["trainer"].items() if key != "max_steps"}
    trainer = instantiate(trainer_config, max_steps=3, logger=False)
    assert type(trainer.strategy.cluster_environment).__name__ == environment
    assert (trainer.world_size, trainer.global_rank, trainer.node_rank, trainer.local_rank) == (4, 3, 1, 1)
