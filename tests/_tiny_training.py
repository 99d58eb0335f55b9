"""A tiny training config (32x16 images, one Xing block) and a checkpoint made from it, for tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
from _fake_data import make_dataset
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from emca import checkpoint
from emca.checkpoint import checkpoint_callbacks  # the original, whatever a test patches later

REPO = Path(__file__).resolve().parents[1]


def tiny_overrides(data_root: Path, run_dir: Path) -> list[str]:
    """The embedded default shrunk to seconds: 32x16 images, 1 block, 4 channels, 12 iterations."""
    return [
        f"data.root={data_root}",
        "data.height=32",
        "data.width=16",
        "data.batch_size=4",
        "data.val_subset=4",
        "data.generate_if_missing=false",
        f"run_dir={run_dir}",
        "model.generator.ngf=4",
        "model.generator.num_blocks=1",
        "model.generator.dropout=0.5",
        "model.discriminator.ndf=4",
        "model.loss.pool_size=2",
        "model.optim.constant_iterations=6",
        "model.optim.decay_iterations=6",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=1",
    ]


def iterations(count: int) -> tuple[str, str]:
    """Overrides that train the tiny config for ``count`` <= 6 iterations, all at the constant learning rate:
    exactly the first ``count`` iterations of its 6 + 6 schedule (the module takes its step budget from it)."""
    assert count <= 6, "beyond the constant phase the learning rates would differ from the full schedule's"
    return f"model.optim.constant_iterations={count}", "model.optim.decay_iterations=0"


class StopAt(pl.Callback):
    """Stops training after ``iteration`` iterations, the schedule unchanged: a run cut short, to be resumed."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if pl_module.iteration >= self.iteration:
            trainer.should_stop = True


def stop_at(iteration: int) -> str:
    """The override that adds a :class:`StopAt` callback (conf/train.yaml's ``callbacks``)."""
    return f"callbacks=[{{_target_:_tiny_training.StopAt,iteration:{iteration}}}]"


def tiny_config(data_root: Path, run_dir: Path, *overrides: str) -> DictConfig:
    """The tiny training config (:func:`tiny_overrides`) with ``overrides`` on top."""
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose("train", overrides=[*tiny_overrides(data_root, run_dir), *overrides])


def tiny_checkpoint(workdir: Path, *overrides: str) -> Path:
    """Train the tiny config for 3 iterations on a fake dataset under ``workdir``; returns last.ckpt."""
    import train as train_script

    data_root = workdir / "data"
    if not data_root.exists():
        make_dataset(data_root, height=32, width=16)
    run_dir = workdir / "run"
    train_script.train(tiny_config(data_root, run_dir, *iterations(3), *overrides))
    return run_dir / "checkpoints" / "last.ckpt"


def moved_adapter(checkpoint: Path, path: Path) -> Path:
    """An adapter for ``checkpoint`` whose personalised experts are moved off the prior, as training would."""
    import torch

    from emca.checkpoint import load_generator
    from emca.personalize.adapter import architecture_fingerprint, save_adapter
    from emca.personalize.moa import PersonalizedGenerator, subject_tokens

    generator, hyper_parameters = load_generator(checkpoint)
    fingerprint = architecture_fingerprint(generator, hyper_parameters["model"])  # before wrapping
    data = hyper_parameters["data"]
    torch.manual_seed(0)
    photos = torch.rand(2, 3, int(data["height"]), int(data["width"])) * 2 - 1
    personalized = PersonalizedGenerator(generator, subject_tokens(generator, photos, (2, 2)))
    with torch.no_grad():
        for parameter in personalized.parameters():
            if parameter.requires_grad:
                parameter.add_(0.5 * torch.randn_like(parameter))
    save_adapter(path, personalized, fingerprint, {"token_grid": [2, 2], "router_hidden": 32, "router_init_prior": 0.5})
    return path


class LossRecorder(pl.Callback):
    """(optimizer step, generator loss, D_PB loss) after every iteration."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        metrics = trainer.callback_metrics
        self.losses.append(
            (trainer.global_step, float(metrics["train/loss_generator"]), float(metrics["train/loss_d_pose"]))
        )


def run(cfg: DictConfig, monkeypatch: pytest.MonkeyPatch) -> LossRecorder:
    """train.train with a LossRecorder added to the trainer's callbacks."""
    import train as train_script

    recorder = LossRecorder()
    monkeypatch.setattr(checkpoint, "checkpoint_callbacks", lambda *args: [*checkpoint_callbacks(*args), recorder])
    train_script.train(cfg)
    return recorder


def logged_steps(run_dir: Path) -> list[tuple[int, float]]:
    """(step, train/l1) of every training row of a run's CSV log."""
    import pandas as pd

    table = pd.read_csv(run_dir / "logs" / "version_0" / "metrics.csv")
    rows = table[table["train/l1"].notna()]
    return list(zip(rows["step"].astype(int), rows["train/l1"].round(5)))
