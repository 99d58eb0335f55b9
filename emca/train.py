"""``emca train``: train a pose-transfer GAN, or personalise one (``experiment=personalize``).

Examples::

    emca train                                        # reduced XingGAN on the synthetic dataset, CPU
    emca train experiment=xinggan_deepfashion data.root=/data/fashion
    emca train model/attention=sdpa trainer=gpu trainer.precision=bf16-mixed
    emca train resume=outputs/train/<run>/checkpoints/last.ckpt      # continue a run exactly
    emca train ckpt=converted.ckpt                    # a new run from a model's weights (fine-tuning)
    emca train -m experiment=ablation                 # Hydra multirun sweep

``python train.py ...`` is the same command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from emca.cli import hydra_command


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build data, module and trainer from ``cfg`` and fit; returns the final logged metrics."""
    # torch and Lightning are imported here, not at the top, so `emca train --help` answers at once
    from pathlib import Path

    import pytorch_lightning as pl
    import torch
    from hydra.utils import get_class, instantiate
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from emca import checkpoint
    from emca.allocator import retain_freed_memory
    from emca.build import build_datamodule
    from emca.config import to_plain
    from emca.errors import ConfigError, RunInterrupted
    from emca.progress import IterationProgressBar, ProgressLog

    if cfg.trainer.get("max_steps") is not None:
        raise ConfigError(
            f"trainer.max_steps is {cfg.trainer.max_steps!r}, but the Trainer's step budget comes from the model's "
            "schedule (the module's max_optimizer_steps), so it cannot be set. Remove trainer.max_steps and set the "
            "iterations instead: model.optim.constant_iterations and model.optim.decay_iterations "
            "(experiment=personalize: model.optim.iterations)."
        )
    if cfg.threads is not None:
        if isinstance(cfg.threads, bool) or not isinstance(cfg.threads, int) or cfg.threads < 1:
            raise ConfigError(f"Config field 'threads' is {cfg.threads!r}; expected a positive number of threads.")
        torch.set_num_threads(cfg.threads)
    if not isinstance(cfg.retain_freed_memory, bool):
        raise ConfigError(f"Config field 'retain_freed_memory' is {cfg.retain_freed_memory!r}; expected true or false.")
    if cfg.retain_freed_memory:
        retain_freed_memory()
    if cfg.trainer.get("accelerator") == "gpu" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator=gpu, but torch sees no CUDA GPU on this machine. Add trainer=cpu to train on the "
            "CPU (for a quick end-to-end check of real data on a CPU, also +smoke=cpu)."
        )
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    datamodule = build_datamodule(to_plain(cfg.data))
    module_class = get_class(cfg.module)
    module = module_class(
        model=to_plain(cfg.model), data=to_plain(cfg.data), weights_dir=cfg.weights_dir, seed=cfg.seed
    )
    progress_bar = [IterationProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        # the module owns its step budget: Lightning counts optimizer steps, which the module knows per iteration
        max_steps=module.max_optimizer_steps,
        default_root_dir=str(run_dir),
        logger=instantiate(cfg.logger),
        callbacks=[
            *checkpoint.checkpoint_callbacks(
                run_dir, cfg.checkpoint_every_n_iterations, module.optimizer_steps_per_iteration
            ),
            LearningRateMonitor(logging_interval="step"),
            ProgressLog(cfg.progress_log_seconds),
            *progress_bar,
            *(instantiate(callback) for callback in cfg.callbacks or ()),  # conf/train.yaml: callbacks
        ],
        plugins=[checkpoint.SafeCheckpointIO()],
    )
    # experiment=personalize builds its module around ckpt (the frozen base); the GAN starts from its weights
    starts_from_weights = cfg.ckpt and hasattr(module, "load_initial_weights")
    if cfg.resume and starts_from_weights:
        raise ConfigError("resume continues a run exactly and ckpt starts a new one from a model's weights; give one.")
    if cfg.resume:
        checkpoint.check_resumable(cfg.resume, module)
    if starts_from_weights:
        module.load_initial_weights(checkpoint.initial_weights(cfg.ckpt, module))
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.resume, weights_only=True)
    except SIGTERMException as err:
        last = checkpoint.last_checkpoint(run_dir)
        saved = f"'{last}' holds the state it reached" if last.is_file() else "no checkpoint had been written yet"
        raise RunInterrupted(
            f"Training was stopped by SIGTERM at iteration {module.iteration}; {saved}. Resume with resume={last}."
        ) from err
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(f"run directory: {run_dir}\nfinal metrics: {metrics}")
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    """``emca train [key=value ...]`` (``sys.argv[1:]`` when ``argv`` is None)."""
    # the validation SSIM is what a Hydra sweeper (e.g. Optuna) maximises
    hydra_command("train", lambda cfg: train(cfg).get("val/ssim"), argv)
