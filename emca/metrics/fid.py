"""Frechet Inception Distance and Inception Score from extracted features, and the cache of the
reference set's feature statistics.

The statistics and the Inception Score are torch-fidelity's (``fid_features_to_statistics``,
``isc_features_to_metric``). The Frechet distance is computed with symmetric eigendecompositions in
float64 (see :func:`frechet_distance`); tests compare it with ``scipy.linalg.sqrtm`` of the covariance
product, which torch-fidelity and pytorch-fid use. This module adds the statistics cache: the mean and
covariance of the reference images' features are saved once per (dataset, split, backbone, weight file,
image size, resize) under a cache directory, written atomically and read back without pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

from emca.errors import DataError
from emca.io import atomic_open


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean (D,) and covariance (D, D) of N feature vectors, in float64."""

    mean: np.ndarray
    covariance: np.ndarray
    count: int

    @classmethod
    def from_features(cls, features: torch.Tensor) -> FeatureStatistics:
        """Statistics of (N, D) features; N >= 2 is needed for a covariance."""
        if features.dim() != 2 or features.shape[0] < 2:
            raise DataError(f"FID needs at least 2 images, got features of shape {tuple(features.shape)}.")
        stats = fid_features_to_statistics(features.detach().to("cpu", torch.float64))
        return cls(stats["mu"], stats["sigma"], int(features.shape[0]))


def frechet_distance(first: FeatureStatistics, second: FeatureStatistics) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) of two Gaussians.

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which are those of the
    symmetric positive semi-definite S1^(1/2) S2 S1^(1/2): two ``torch.linalg.eigh`` calls in float64. For
    2048-d features this takes about 3 s on one CPU core where ``scipy.linalg.sqrtm`` of the product takes
    about 20 s, and round-off cannot make the trace complex when the covariances are singular (fewer
    images than feature dimensions).
    """
    if first.mean.shape != second.mean.shape:
        raise DataError(f"FID of features of {first.mean.shape[0]} and {second.mean.shape[0]} dimensions.")
    cov_first = torch.from_numpy(np.asarray(first.covariance, dtype=np.float64))
    cov_second = torch.from_numpy(np.asarray(second.covariance, dtype=np.float64))
    values, vectors = torch.linalg.eigh(cov_first)
    root_first = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    middle = root_first @ cov_second @ root_first
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    difference = np.asarray(first.mean, dtype=np.float64) - np.asarray(second.mean, dtype=np.float64)
    return float(difference @ difference + cov_first.trace() + cov_second.trace() - 2 * trace_root)


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Mean and standard deviation over ``splits`` of exp(E KL(p(y|x) || p(y))) from (N, K) logits."""
    if logits.shape[0] < splits:
        raise DataError(
            f"The Inception Score over {splits} splits needs at least {splits} images, got {logits.shape[0]}."
        )
    score = isc_features_to_metric(logits.detach().to("cpu", torch.float64), splits=splits)
    return float(score[KEY_METRIC_ISC_MEAN]), float(score[KEY_METRIC_ISC_STD])


def statistics_cache_path(cache_dir: str | os.PathLike, key: dict[str, str | int]) -> Path:
    """File for the statistics described by ``key``: a readable prefix plus a hash of the whole key."""
    text = json.dumps(key, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    readable = "_".join(str(key[field]) for field in ("name", "split", "backbone") if field in key)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in readable)
    return Path(cache_dir) / f"fid-stats_{safe}_{digest}.npz"


def save_statistics(path: str | os.PathLike, statistics: FeatureStatistics, key: dict[str, str | int]) -> None:
    with atomic_open(path, "wb") as handle:
        np.savez(
            handle,
            mean=statistics.mean,
            covariance=statistics.covariance,
            count=np.int64(statistics.count),
            key=np.array(json.dumps(key, sort_keys=True)),
        )


def load_statistics(path: str | os.PathLike, key: dict[str, str | int]) -> FeatureStatistics | None:
    """The cached statistics at ``path`` if present, readable without pickle and made for ``key``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != json.dumps(key, sort_keys=True):
                return None
            return FeatureStatistics(stored["mean"], stored["covariance"], int(stored["count"]))
    except (OSError, ValueError, KeyError):  # a truncated or foreign file is recomputed, not trusted
        return None


def cached_statistics(
    cache_dir: str | os.PathLike | None,
    key: dict[str, str | int],
    compute: Callable[[], FeatureStatistics],
) -> tuple[FeatureStatistics, Path | None, bool]:
    """Statistics for ``key`` from the cache, or computed (and cached when ``cache_dir`` is set).

    Returns:
        (statistics, cache file or None, whether it was read from the cache).
    """
    if cache_dir is None:
        return compute(), None, False
    path = statistics_cache_path(cache_dir, key)
    cached = load_statistics(path, key)
    if cached is not None:
        return cached, path, True
    statistics = compute()
    save_statistics(path, statistics, key)
    return statistics, path, False
