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

from emca.data.skeleton import person_mask
from emca.errors import WeightsError
from emca.metrics.definitions import MetricSpec, ReferenceStatistics, SetScoring
from emca.metrics.images import ImageFiles, read_rgb
from emca.metrics.inception import InceptionBackbone
from emca.metrics.ssim import pad_white

ON_MISSING_WEIGHTS = ("skip", "error")


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
    assert on_missing_weights in ON_MISSING_WEIGHTS, on_missing_weights
    loaded: dict[tuple, nn.Module] = {}
    models: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    for spec in specs:
        key = spec.model_key()
        if key is None:
            continue
        try:
            if key not in loaded:
                loaded[key] = spec.load_model(weights_dir, device, trusted_sha256)
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


def _per_pair_features_once(
    pairs: ScoringPairs, batch_size: int, num_workers: int, device: torch.device
) -> Callable[[InceptionBackbone, Sequence[Path], str], torch.Tensor]:
    """Features of one image per pair (a source or a target) under a backbone: every distinct file runs through
    the network once, and each (backbone, image list) only once however many metrics ask."""
    computed: dict[tuple[int, str], torch.Tensor] = {}

    def per_pair_features(backbone: InceptionBackbone, paths: Sequence[Path], what: str) -> torch.Tensor:
        key = (id(backbone), what)
        if key not in computed:
            distinct = list(dict.fromkeys(paths))
            description = f"FID {what} ({len(distinct)} images)"
            features = image_features(
                backbone, distinct, pairs.height, pairs.width, description, batch_size, num_workers, device
            )
            position = {path: index for index, path in enumerate(distinct)}
            computed[key] = features[[position[path] for path in paths]]
        return computed[key]

    return per_pair_features


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
    """Score every pair with every metric in ``specs`` that is not skipped (a metric that needs a network but
    has no entry in ``models`` is taken as skipped by :func:`load_models`). Per-image metrics are computed batch
    by batch; set-level ones collect their network outputs and are summarised at the end (each FID with its
    copy-the-source baseline and ceiling when ``pairs.sources`` is set)."""
    device = torch.device(device)
    active = [spec for spec in specs if spec.model_key() is None or spec.name in models]
    outputs: dict[str, list[torch.Tensor]] = {spec.name: [] for spec in active}
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    with torch.no_grad():
        for batch in progress(loader, f"Scoring {len(pairs)} pairs", device):
            generated = batch["generated"].to(device)
            reference = batch["reference"].to(device)
            masks = _target_masks(active, batch["target_keypoints"], pairs.height, pairs.width, device)
            # metrics of one backbone that see the same images share its forward pass
            network_outputs: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
            for spec in active:
                images = _prepare(spec, generated, masks)
                model = models.get(spec.name)
                if not spec.set_level:
                    value = spec.per_image(images, _prepare(spec, reference, masks), model, batch["target_keypoints"])
                    outputs[spec.name].append(value.cpu())
                    continue
                key = (spec.model_key(), spec.mask, spec.point_radius, spec.closing_size)
                if key not in network_outputs:
                    features, logits = model(images)
                    network_outputs[key] = (features.cpu(), None if logits is None else logits.cpu())
                outputs[spec.name].append(spec.output(*network_outputs[key]))

    table = pd.DataFrame(
        {
            "from": [a for a, _ in pair_names],
            "to": [b for _, b in pair_names],
            "file": [p.name for p in pairs.generated],
        }
    )
    per_pair_features = _per_pair_features_once(pairs, batch_size, num_workers, device)
    set_scoring = SetScoring(reference_statistics, per_pair_features, pairs.sources, pairs.reference)
    summary: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    for spec in active:
        values = torch.cat(outputs[spec.name])
        if not spec.set_level:
            table[spec.name] = values.numpy()
            scored = values.numpy()[~np.isnan(values.numpy())]  # NaN: a pair the metric cannot score (no head)
            summary[spec.name] = float(scored.mean()) if len(scored) else float("nan")
            # a network-based metric names the weight files it was built from (and so where they were found)
            details[spec.name] = {**spec.settings(), **getattr(models.get(spec.name), "weight_file", {})}
            continue
        for name, (value, facts) in spec.summarize(values, models[spec.name], set_scoring).items():
            summary[name], details[name] = value, facts
    return ScoreResult(summary, table, details)
