"""A callback for the DDP test: what each process trained on, and its generator at the end."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch


class RankRecord(pl.Callback):
    """Writes ``<run_dir>/rank<r>.pt``: the world size, the source images of every training batch this process
    saw, the validation metrics it logged, its step and its generator's weights after training."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.validation: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.names += list(batch.source_name)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if not trainer.sanity_checking:
            metrics = trainer.callback_metrics
            self.validation.append({name: float(metrics[name]) for name in ("val/ssim", "val/l1") if name in metrics})

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        record = {
            "world_size": trainer.world_size,
            "names": self.names,
            "validation": self.validation,
            "global_step": trainer.global_step,
            "generator": {
                name: tensor.detach().cpu().clone() for name, tensor in pl_module.generator.state_dict().items()
            },
        }
        torch.save(record, Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pt")
