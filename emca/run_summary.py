"""A Lightning callback that writes ``run_summary.json`` into the run directory when training ends.

The summary holds what an ablation table needs from one run: the caller's ``labels`` (e.g. variant and
seed), the final logged metrics (val/ssim, val/l1, ...), the generator's parameter count, and the mean
wall-clock time of a training iteration (generator step plus both discriminator steps), measured
around ``training_step`` and skipping the first iteration (warm-up: allocation, lazy initialisation).
Add it from a config with ``callbacks: [{_target_: emca.run_summary.RunSummary, labels: {...}}]``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from emca.io import atomic_write_text

SUMMARY_FILE = "run_summary.json"
WARMUP_ITERATIONS = 1


class RunSummary(pl.Callback):
    """Writes ``<trainer.default_root_dir>/run_summary.json`` (atomically) at the end of ``fit``."""

    def __init__(self, labels: dict[str, Any] | None = None) -> None:
        self.labels = dict(labels or {})
        self.step_seconds: list[float] = []
        self._started: float | None = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._started is not None:
            self.step_seconds.append(time.perf_counter() - self._started)
            self._started = None

    def summary(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        timed = self.step_seconds[WARMUP_ITERATIONS:] or self.step_seconds
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if isinstance(value, (torch.Tensor, float, int))
        }
        return {
            **self.labels,
            "metrics": metrics,
            "generator_parameters": sum(p.numel() for p in pl_module.generator.parameters()),
            "iterations": len(self.step_seconds),
            "mean_step_seconds": statistics.fmean(timed) if timed else None,
        }

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / SUMMARY_FILE
            atomic_write_text(path, json.dumps(self.summary(trainer, pl_module), indent=2) + "\n")
