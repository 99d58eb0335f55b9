"""Periodic progress lines in the run's log, for runs nobody watches through a progress bar.

Lightning's progress bar only redraws on a terminal: in a Hydra multirun, a cluster job's log or a
piped stdout, training would look silent for minutes. This callback writes a line through ``logging``
(so it lands on the console and in Hydra's ``<run>/train.log``) every ``every_seconds``, and one after
each validation:

    iteration 240/800 (30 %), 0.21 s/iteration, about 2 min left; train/l1 0.1210, ...
    validation after iteration 336: val/ssim 0.3394, val/l1 0.1130
    training finished: 800 of 800 iterations in 3 min

An iteration is one batch: the generator step plus both discriminator steps (three optimizer steps). The
run's end is said in iterations too: Lightning's own "`Trainer.fit` stopped: `max_steps=2400` reached" counts
optimizer steps, so it is filtered out while this callback runs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

log = logging.getLogger(__name__)
# the loggers Lightning's rank_zero_info writes through
_LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class _OptimizerStepEnd(logging.Filter):
    """Drops Lightning's end-of-fit line, which counts optimizer steps, not iterations."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("`Trainer.fit` stopped: `max_steps=")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _metrics(trainer: pl.Trainer, prefix: str) -> str:
    values = sorted((name, float(value)) for name, value in trainer.callback_metrics.items() if name.startswith(prefix))
    return ", ".join(f"{name} {value:.4f}" for name, value in values)


class ProgressLog(pl.Callback):
    """Logs iteration, speed, time left and the latest training losses every ``every_seconds``."""

    def __init__(self, every_seconds: float = 60.0) -> None:
        assert every_seconds > 0, every_seconds
        self.every_seconds = float(every_seconds)
        self._started = self._last_line = 0.0
        self._first_iteration = 0
        self._step_end_filter = _OptimizerStepEnd()

    @staticmethod
    def iterations(trainer: pl.Trainer) -> tuple[int, int | None]:
        """(iterations done, planned iterations or None): Lightning counts optimizer steps, which the training
        module converts through its ``optimizer_steps_per_iteration``."""
        per_iteration = trainer.lightning_module.optimizer_steps_per_iteration
        planned = trainer.max_steps // per_iteration if trainer.max_steps and trainer.max_steps > 0 else None
        return trainer.global_step // per_iteration, planned

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = self._last_line = time.monotonic()
        self._first_iteration = self.iterations(trainer)[0]  # > 0 when resuming
        for name in _LIGHTNING_LOGGERS:
            logging.getLogger(name).addFilter(self._step_end_filter)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        done, planned = self.iterations(trainer)
        if trainer.is_global_zero:
            of = f" of {planned}" if planned else ""
            log.info(f"training finished: {done}{of} iterations in {_duration(time.monotonic() - self._started)}")
        self._remove_filter()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_filter()

    def _remove_filter(self) -> None:
        for name in _LIGHTNING_LOGGERS:
            logging.getLogger(name).removeFilter(self._step_end_filter)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        if not trainer.is_global_zero or now - self._last_line < self.every_seconds:
            return
        self._last_line = now
        done, planned = self.iterations(trainer)
        seconds_per_iteration = (now - self._started) / max(1, done - self._first_iteration)
        line = f"iteration {done}"
        if planned:
            line += f"/{planned} ({100 * done / planned:.0f} %)"
        line += f", {seconds_per_iteration:.2f} s/iteration"
        if planned:
            line += f", about {_duration(seconds_per_iteration * (planned - done))} left"
        losses = _metrics(trainer, "train/")
        log.info(line + (f"; {losses}" if losses else ""))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            metrics = getattr(pl_module, "val_metrics", None)
            protocol = f" ({metrics.protocol})" if hasattr(metrics, "protocol") else ""
            log.info(f"validation after iteration {self.iterations(trainer)[0]}{protocol}: {_metrics(trainer, 'val/')}")


class IterationProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar over the run's planned iterations ("iteration 240/800") instead of one bar per
    epoch: emca bounds training by iterations, and an epoch bar said "Epoch 3/-1" while giving no end."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        done, planned = ProgressLog.iterations(trainer)
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=planned)
        self.train_progress_bar.initial = done  # a resumed run starts where it stopped
        self.train_progress_bar.set_description("iteration")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One bar for the whole run: nothing to reset per epoch."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        done, planned = ProgressLog.iterations(trainer)
        if self._should_update(done, planned or done):
            self.train_progress_bar.n = done
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
            self.train_progress_bar.refresh()
