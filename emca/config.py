"""Hydra / OmegaConf plumbing shared by train.py, eval.py and the tools that need a preset's config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emca.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"

# Lightning counts every optimizer.step() under manual optimisation: one iteration of
# PoseTransferModule steps the generator and both discriminators, so its step budget
# (``max_optimizer_steps``, the Trainer's max_steps) is three per iteration.
OPTIMIZER_STEPS_PER_ITERATION = 3


def to_plain(cfg: DictConfig | dict) -> dict[str, Any]:
    """Resolve a config into plain dicts/lists, which checkpoints can store and load with weights_only."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def compose_train(overrides: Sequence[str]) -> dict[str, Any]:
    """conf/train.yaml composed with ``overrides`` (e.g. ``experiment=xinggan_deepfashion``), resolved to plain
    containers, for tools that need a preset's settings outside a Hydra run (the converter, the benchmarks)."""
    from hydra import compose, initialize_config_dir

    if not CONF.is_dir():
        raise ConfigError(
            f"emca's configs are not at '{CONF}'; use an emca checkout installed with `pip install -e .`."
        )
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=[*overrides, "run_dir=unused"])
    return to_plain(cfg)
