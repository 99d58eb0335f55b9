"""Checkpoints: atomic writing, safe (weights_only) loading, and rebuilding a generator from one.

A Lightning checkpoint of emca stores its configuration as plain containers under
``hyper_parameters`` (``model``: the model config, ``data``: the data config), so it loads with
``weights_only=True``: a checkpoint from the internet cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning_fabric.plugins import TorchCheckpointIO
from torch import nn

from emca.errors import CheckpointError
from emca.io import atomic_torch_save, safe_torch_load

GENERATOR_PREFIX = "generator."
EMA_GENERATOR_PREFIX = "generator_ema.module."


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes atomically and loads tensors and plain containers only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return safe_torch_load(path, map_location=map_location or "cpu")


def build_generator(model_cfg: dict[str, Any]) -> nn.Module:
    """Instantiate the generator of a model config with its attention backend."""
    return instantiate(model_cfg["generator"], attention=instantiate(model_cfg["attention"]))


def generator_state(state_dict: dict[str, torch.Tensor], prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """The generator's weights from a module state dict: the EMA copy when there is one."""
    prefix = (
        EMA_GENERATOR_PREFIX
        if prefer_ema and any(k.startswith(EMA_GENERATOR_PREFIX) for k in state_dict)
        else GENERATOR_PREFIX
    )
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def load_generator(
    ckpt_path: str | os.PathLike, device: str | torch.device = "cpu", prefer_ema: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained generator of a checkpoint in eval mode.

    Returns ``(generator, hyper_parameters)``; ``hyper_parameters["data"]`` holds the data config the model
    was trained with (root, preset, height, width, sigma, ...).
    """
    checkpoint = safe_torch_load(ckpt_path)
    hyper_parameters = checkpoint.get("hyper_parameters")
    if not isinstance(hyper_parameters, dict) or "model" not in hyper_parameters:
        raise CheckpointError(f"'{ckpt_path}' is not an emca training checkpoint (no hyper_parameters.model).")
    generator = build_generator(hyper_parameters["model"])
    weights = generator_state(checkpoint["state_dict"], prefer_ema)
    try:
        generator.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"'{ckpt_path}': the stored generator weights do not fit its config: {err}") from err
    return generator.to(device).eval(), hyper_parameters


def find_latest_checkpoint(root: str | os.PathLike = "outputs/train", name: str = "best.ckpt") -> Path | None:
    candidates = sorted(Path(root).glob(f"*/checkpoints/{name}"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None
