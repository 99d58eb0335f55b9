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
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from emca.cli import hydra_command
from emca.errors import ConfigError
from emca.options import bounded, parse


@dataclass(frozen=True)
class TrainOptions:
    """The schema of conf/train.yaml's own keys (``data``, ``model``, ``trainer`` are checked by their own
    schemas when they are built); conf/train.yaml explains each."""

    seed: int = 0
    module: str = "emca.module.PoseTransferModule"
    resume: str | None = bounded(None, kind=str)
    ckpt: str | None = bounded(None, kind=str)
    weights_dir: str | None = bounded(None, kind=str)
    progress_log_seconds: float = bounded(60.0, exclusive_minimum=0)
    threads: int | None = bounded(None, kind=int, minimum=1)
    retain_freed_memory: bool = True
    checkpoint_every_n_iterations: int | None = bounded(None, kind=int, minimum=1)
    run_dir: str = ""


def check_subject(module: Any, datamodule: Any, sigma: float | None) -> None:
    """experiment=personalize: the subject's photos (and a pose sigma the user set) must fit the base model."""
    from emca.data.keypoints import DEFAULT_SIGMA

    base_data = module.base_hparams.get("data") or {}
    expected = (base_data.get("height"), base_data.get("width"))
    if None not in expected and expected != (datamodule.height, datamodule.width):
        raise ConfigError(
            f"The subject photos in '{datamodule.pairs.image_dir}' are {datamodule.height}x{datamodule.width} (HxW) "
            f"but the base model was trained at {expected[0]}x{expected[1]}; resize or crop the photos (and their "
            "keypoints) to the model's frame, e.g. with emca.pose.framing.fit_to_model."
        )
    base_sigma = base_data.get("sigma", DEFAULT_SIGMA)
    if sigma is not None and sigma != base_sigma:
        raise ConfigError(
            f"data.sigma is {sigma} but the base model's pose maps used sigma {base_sigma}; leave data.sigma=null "
            "to use the base model's."
        )


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
    from emca.errors import RunInterrupted
    from emca.progress import IterationProgressBar, ProgressLog

    if cfg.trainer.get("max_steps") is not None:
        raise ConfigError(
            f"trainer.max_steps is {cfg.trainer.max_steps!r}, but the Trainer's step budget comes from the model's "
            "schedule (the module's max_optimizer_steps), so it cannot be set. Remove trainer.max_steps and set the "
            "iterations instead: model.optim.constant_iterations and model.optim.decay_iterations "
            "(experiment=personalize: model.optim.iterations)."
        )
    plain = to_plain(cfg)
    options = parse(TrainOptions, {key: plain[key] for key in TrainOptions.__dataclass_fields__ if key in plain}, "")
    module_class = get_class(options.module)
    builds_on_ckpt = getattr(module_class, "builds_on_ckpt", False)  # experiment=personalize: ckpt is the base
    if builds_on_ckpt and not options.ckpt:
        raise ConfigError(
            "Config field 'ckpt' is empty; pass ckpt=PATH/TO/last.ckpt (the trained pose-transfer model to "
            "personalise)."
        )
    if options.resume and options.ckpt and not builds_on_ckpt:
        raise ConfigError("resume continues a run exactly and ckpt starts a new one from a model's weights; give one.")
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    if options.retain_freed_memory:
        retain_freed_memory()
    if cfg.trainer.get("accelerator") == "gpu" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator=gpu, but torch sees no CUDA GPU on this machine. Add trainer=cpu to train on the "
            "CPU (for a quick end-to-end check of real data on a CPU, also +smoke=cpu)."
        )
    pl.seed_everything(options.seed, workers=True)
    run_dir = Path(options.run_dir)
    datamodule = build_datamodule(plain["data"])
    module = module_class(model=plain["model"], data=plain["data"], weights_dir=options.weights_dir, seed=options.seed)
    if builds_on_ckpt:
        check_subject(module, datamodule, plain["data"].get("sigma"))
    progress_bar = [IterationProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        # the module owns its step budget: Lightning counts optimizer steps, which the module knows per iteration
        max_steps=module.max_optimizer_steps,
        default_root_dir=str(run_dir),
        logger=instantiate(cfg.logger),
        callbacks=[
            *checkpoint.checkpoint_callbacks(
                run_dir, options.checkpoint_every_n_iterations, module.optimizer_steps_per_iteration
            ),
            LearningRateMonitor(logging_interval="step"),
            ProgressLog(options.progress_log_seconds),
            *progress_bar,
            *(instantiate(callback) for callback in cfg.callbacks or ()),  # conf/train.yaml: callbacks
        ],
        plugins=[checkpoint.SafeCheckpointIO()],
    )
    # experiment=personalize builds its module around ckpt (the frozen base); the GAN starts from its weights
    if options.resume:
        checkpoint.check_resumable(options.resume, module)
    if options.ckpt and not builds_on_ckpt:
        module.load_initial_weights(checkpoint.initial_weights(options.ckpt, module))
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=options.resume, weights_only=True)
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
