"""Hydra / OmegaConf plumbing shared by train.py and eval.py."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

# Lightning counts every optimizer.step() under manual optimisation: one iteration steps the
# generator and both discriminators, so `trainer.max_steps` is three per iteration.
OPTIMIZER_STEPS_PER_ITERATION = 3


def _optimizer_steps(*iterations: int) -> int:
    return OPTIMIZER_STEPS_PER_ITERATION * sum(int(n) for n in iterations)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("optimizer_steps"):
        OmegaConf.register_new_resolver("optimizer_steps", _optimizer_steps)


def to_plain(cfg: DictConfig | dict) -> dict[str, Any]:
    """Resolve a config into plain dicts/lists, which checkpoints can store and load with weights_only."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)
