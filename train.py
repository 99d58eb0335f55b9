"""Train a pose-transfer GAN. `python train.py` runs the embedded default (synthetic data, CPU).

Examples:
    python train.py                                   # reduced XingGAN on the synthetic dataset, CPU
    python train.py experiment=xinggan_deepfashion data.root=/data/fashion
    python train.py model/attention=sdpa trainer=gpu trainer.precision=bf16-mixed
    python train.py ckpt_path=outputs/train/<run>/checkpoints/last.ckpt   # resume exactly
    python train.py -m experiment=ablation            # Hydra multirun sweep
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.utilities.exceptions import SIGTERMException

from emca.build import build_datamodule
from emca.checkpoint import SafeCheckpointIO, check_resumable, checkpoint_callbacks
from emca.cli import user_errors
from emca.config import OPTIMIZER_STEPS_PER_ITERATION, register_resolvers, to_plain
from emca.errors import RunInterrupted
from emca.progress import ProgressLog

register_resolvers()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build data, module and trainer from ``cfg`` and fit; returns the final logged metrics."""
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    datamodule = build_datamodule(to_plain(cfg.data))
    module_class = get_class(cfg.module)
    module = module_class(
        model=to_plain(cfg.model), data=to_plain(cfg.data), weights_dir=cfg.weights_dir, seed=cfg.seed
    )
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        default_root_dir=str(run_dir),
        logger=instantiate(cfg.logger),
        callbacks=[
            *checkpoint_callbacks(run_dir, cfg.checkpoint_every_n_iterations),
            LearningRateMonitor(logging_interval="step"),
            ProgressLog(cfg.progress_log_seconds),
            *(instantiate(callback) for callback in cfg.get("callbacks") or ()),
        ],  # e.g. experiment=ablation
        plugins=[SafeCheckpointIO()],
    )
    if cfg.ckpt_path:
        check_resumable(cfg.ckpt_path, module)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    except SIGTERMException as err:
        last = run_dir / "checkpoints" / "last.ckpt"
        saved = f"'{last}' holds the state it reached" if last.is_file() else "no checkpoint had been written yet"
        raise RunInterrupted(
            f"Training was stopped by SIGTERM at iteration {trainer.global_step // OPTIMIZER_STEPS_PER_ITERATION}; "
            f"{saved}. Resume with ckpt_path={last}."
        ) from err
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(f"run directory: {run_dir}\nfinal metrics: {metrics}")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with user_errors():
        metrics = train(cfg)
    return metrics.get("val/ssim")


if __name__ == "__main__":
    main()
