"""Hydra / OmegaConf plumbing shared by emca train, emca eval and the tools that need a preset's config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emca.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"


def cpu_precision() -> str:
    """``bf16-mixed`` where the CPU computes bfloat16 natively (AVX512-BF16 or AMX), else ``32-true``: the
    ``${emca_cpu_precision:}`` of conf/trainer/cpu.yaml. Natively, oneDNN's bf16 convolutions made the embedded
    default's iteration 1.4x faster (emca bench cpu-training); emulated, bf16 is slower than fp32."""
    import torch

    native = (
        getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return "bf16-mixed" if any(native) else "32-true"


if not OmegaConf.has_resolver("emca_cpu_precision"):
    OmegaConf.register_new_resolver("emca_cpu_precision", cpu_precision)


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
