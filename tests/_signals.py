"""A callback that signals its own process at a given iteration: a cluster scheduler's SIGTERM, on cue.

Used by the fault tests through the training config (``callbacks=[{_target_: _signals.SignalAt, ...}]``).
"""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class SignalAt(pl.Callback):
    def __init__(self, iteration: int, signum: int = int(signal.SIGTERM)) -> None:
        self.iteration = iteration
        self.signum = signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if pl_module.iteration == self.iteration:
            os.kill(os.getpid(), self.signum)
