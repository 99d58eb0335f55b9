"""Scoring generated images against their ground truth under a protocol.

Per-image metrics (SSIM variants, PSNR, LPIPS) are computed batch by batch on the device and kept
per pair; set-level metrics (FID, Inception Score) collect Inception features of the generated images
and compare them at the end with the reference set's statistics, which the caller provides (and caches).
Metrics whose pretrained weights are missing are skipped with the reason recorded, or stop the run,
as ``on_missing_weights`` says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from emca.data.skeleton import person_mask
from emca.errors import ConfigError, WeightsError
from emca.metrics.fid import FeatureStatistics, frechet_distance, inception_score
from emca.metrics.images import read_rgb
from emca.metrics.inception import BACKBONE_RESIZE, load_inception
from emca.metrics.lpips import load_lpips, lpips_distance
from emca.metrics.protocol import (
    GENERATED_RANGE,
    FIDSpec,
    InceptionScoreSpec,
    L1Spec,
    LPIPSSpec,
    MetricSpec,
    PSNRSpec,
    SSIMSpec,
)
from emca.metrics.psnr import peak_signal_noise_ratio
from emca.metrics.ssim import generated_range, pad_white, structural_similarity

ON_MISSING_WEIGHTS = ("skip", "error")
# (statistics of the reference set, facts about it for the report) for a FID metric and its backbone
ReferenceStatistics = Callable[[FIDSpec, nn.Module], tuple[FeatureStatistics, dict[str, Any]]]


class ScoringPairs(Dataset):
    """Generated image, ground truth and target keypoints of each pair, as uint8 (3, H, W) tensors."""

    def __init__(
        self,
        generated: Sequence[Path],
        reference: Sequence[Path],
        target_keypoints: Sequence[np.ndarray],
        height: int,
        width: int,
        resize: str | None = None,
    ) -> None:
        if not len(generated) == len(reference) == len(target_keypoints):
            raise ValueError("generated, reference and target_keypoints must have one entry per pair")
        self.generated, self.reference, self.target_keypoints = list(generated), list(reference), list(target_keypoints)
        self.height, self.width, self.resize = height, width, resize

    def __len__(self) -> int:
        return len(self.generated)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generated = read_rgb(self.generated[index], self.height, self.width, self.resize)
        reference = read_rgb(self.reference[index], self.height, self.width)
        return {
            "generated": torch.from_numpy(generated).permute(2, 0, 1),
            "reference": torch.from_numpy(reference).permute(2, 0, 1),
            "target_keypoints": torch.as_tensor(self.target_keypoints[index], dtype=torch.int64),
            "index": torch.tensor(index),
        }


@dataclass
class ScoreResult:
    summary: dict[str, float]
    per_image: pd.DataFrame
    details: dict[str, dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)


def _disable_hint(name: str) -> str:
    return (
        f"To evaluate without it, leave '{name}' out of `metrics=[...]` (e.g. metrics=[ssim,psnr]); "
        "on_missing_weights=skip skips it instead of stopping."
    )


def _model_key(spec: MetricSpec) -> tuple | None:
    """Metrics with equal keys share one network; None for metrics that need none."""
    if isinstance(spec, LPIPSSpec):
        return ("lpips", spec.net, spec.version)
    if isinstance(spec, (FIDSpec, InceptionScoreSpec)):
        return ("inception", spec.backbone)
    return None


def _build_model(spec: MetricSpec, weights_dir: str | Path | None, device: torch.device | str) -> nn.Module:
    if isinstance(spec, LPIPSSpec):
        return load_lpips(spec.net, spec.version, weights_dir, device, _disable_hint(spec.name))
    return load_inception(spec.backbone, weights_dir, device, _disable_hint(spec.name))


def load_models(
    specs: Sequence[MetricSpec],
    weights_dir: str | Path | None,
    device: torch.device | str,
    on_missing_weights: str = "skip",
    log: Callable[[str], None] = print,
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The network each metric needs (shared between metrics of one backbone), and the skipped metrics.

    A missing or unreadable weight file raises WeightsError with ``on_missing_weights="error"``; with
    ``"skip"`` the metric is dropped, its reason logged and returned.
    """
    if on_missing_weights not in ON_MISSING_WEIGHTS:
        raise ConfigError(
            f"on_missing_weights: expected one of {list(ON_MISSING_WEIGHTS)}, got {on_missing_weights!r}."
        )
    loaded: dict[tuple, nn.Module] = {}
    models: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    for spec in specs:
        key = _model_key(spec)
        if key is None:
            continue
        try:
            if key not in loaded:
                loaded[key] = _build_model(spec, weights_dir, device)
            models[spec.name] = loaded[key]
        except WeightsError as err:
            if on_missing_weights == "error":
                raise
            skipped[spec.name] = str(err)
            log(f"skipped {spec.name}: {err}")
    return models, skipped


def _prepare(spec: MetricSpec, images: torch.Tensor, masks: dict[tuple, torch.Tensor]) -> torch.Tensor:
    """The images a metric sees: masked by the target person (if asked), then padded with white."""
    if spec.mask:
        images = images * masks[(spec.point_radius, spec.closing_size)][:, None].to(images.dtype)
    return pad_white(images, spec.white_padding)


def _target_masks(
    specs: Sequence[MetricSpec], keypoints: torch.Tensor, height: int, width: int, device: torch.device
) -> dict[tuple, torch.Tensor]:
    """(B, H, W) bool person masks for every (point_radius, closing_size) the masked metrics use."""
    masks = {}
    for spec in specs:
        key = (spec.point_radius, spec.closing_size)
        if spec.mask and key not in masks:
            drawn = [person_mask(k.numpy(), height, width, spec.point_radius, spec.closing_size) for k in keypoints]
            masks[key] = torch.from_numpy(np.stack(drawn)).to(device)
    return masks


def _per_image(
    spec: MetricSpec, generated: torch.Tensor, reference: torch.Tensor, model: nn.Module | None
) -> torch.Tensor:
    if isinstance(spec, SSIMSpec):
        data_range = generated_range(generated) if spec.data_range == GENERATED_RANGE else float(spec.data_range)
        return structural_similarity(generated, reference, data_range, spec.window)
    if isinstance(spec, PSNRSpec):
        return peak_signal_noise_ratio(generated, reference, spec.data_range)
    if isinstance(spec, L1Spec):  # uint8 levels -> [-1, 1] units
        return (generated.double() - reference.double()).abs().mean(dim=(1, 2, 3)) / 127.5
    if isinstance(spec, LPIPSSpec):
        return lpips_distance(model, generated, reference)
    raise TypeError(f"{type(spec).__name__} is not a per-image metric")


def score(
    pairs: ScoringPairs,
    pair_names: Sequence[tuple[str, str]],
    specs: Sequence[MetricSpec],
    models: dict[str, nn.Module],
    reference_statistics: ReferenceStatistics | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    num_workers: int = 0,
) -> ScoreResult:
    """Score every pair with every metric in ``specs`` that is not skipped (a model-based metric
    without an entry in ``models`` is taken as skipped by :func:`load_models`)."""
    device = torch.device(device)
    active = [s for s in specs if s.name in models or isinstance(s, (SSIMSpec, PSNRSpec, L1Spec))]
    per_image: dict[str, list[torch.Tensor]] = {
        s.name: [] for s in active if isinstance(s, (SSIMSpec, PSNRSpec, L1Spec, LPIPSSpec))
    }
    inception_outputs: dict[str, list[torch.Tensor]] = {s.name: [] for s in active if s.name not in per_image}
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"Scoring {len(pairs)} pairs", unit="batch"):
            generated = batch["generated"].to(device)
            reference = batch["reference"].to(device)
            masks = _target_masks(active, batch["target_keypoints"], pairs.height, pairs.width, device)
            features_memo: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
            for spec in active:
                images = _prepare(spec, generated, masks)
                if spec.name in per_image:
                    per_image[spec.name].append(
                        _per_image(spec, images, _prepare(spec, reference, masks), models.get(spec.name)).cpu()
                    )
                    continue
                memo_key = (spec.backbone, spec.mask, spec.point_radius, spec.closing_size)
                if memo_key not in features_memo:
                    features_memo[memo_key] = tuple(out.cpu() for out in models[spec.name](images))
                features, logits = features_memo[memo_key]
                inception_outputs[spec.name].append(features if isinstance(spec, FIDSpec) else logits)

    table = pd.DataFrame(
        {
            "from": [a for a, _ in pair_names],
            "to": [b for _, b in pair_names],
            "file": [p.name for p in pairs.generated],
        }
    )
    summary: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    for spec in active:
        details[spec.name] = spec.settings()
        if spec.name in per_image:
            values = torch.cat(per_image[spec.name]).numpy()
            table[spec.name] = values
            summary[spec.name] = float(values.mean())
        elif isinstance(spec, FIDSpec):
            if reference_statistics is None:
                raise ValueError("FID needs reference_statistics")
            generated_stats = FeatureStatistics.from_features(torch.cat(inception_outputs[spec.name]))
            reference_stats, facts = reference_statistics(spec, models[spec.name])
            summary[spec.name] = frechet_distance(generated_stats, reference_stats)
            details[spec.name].update(
                facts, resize_to_299=BACKBONE_RESIZE[spec.backbone], generated_images=generated_stats.count
            )
        else:
            mean, std = inception_score(torch.cat(inception_outputs[spec.name]), spec.splits)
            summary[spec.name] = mean
            details[spec.name].update(std=std, resize_to_299=BACKBONE_RESIZE[spec.backbone])
    return ScoreResult(summary, table, details)
