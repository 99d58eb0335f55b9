"""Hydra / OmegaConf plumbing shared by train.py and eval.py."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

# Lightning counts every optimizer.step() under manual optimisation: one iteration of
# PoseTransferModule steps the generator and both discriminators, so its step budget
# (``max_optimizer_steps``, the Trainer's max_steps) is three per iteration.
OPTIMIZER_STEPS_PER_ITERATION = 3


def to_plain(cfg: DictConfig | dict) -> dict[str, Any]:
    """Resolve a config into plain dicts/lists, which checkpoints can store and load with weights_only."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)
