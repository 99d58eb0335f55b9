"""Inception-v3 feature extractors for FID and the Inception Score, loaded from local files only.

Two backbones, because the field uses both and their FIDs differ:

- ``torchvision``: torchvision's ImageNet Inception-v3 (``inception_v3_google-0cc3c7bd.pth``), as in
  the GFLA / PIDM scripts (the early pytorch-fid ``InceptionV3``): images in [0, 1] are resized
  bilinearly to 299x299 (align_corners=False), scaled to [-1, 1], and the 2048-d average pool
  after ``Mixed_7c`` is the feature; logits come from the 1000-class ``fc``.
- ``tf``: the TF-ported Inception of torch-fidelity / pytorch-fid
  (``weights-inception-2015-12-05-6726825d.pth``) through ``torch_fidelity``'s own feature
  extractor, with its TF1-compatible resize; logits are its 1008 unbiased logits (as torch-fidelity's IS).

Every extractor maps uint8 (B, 3, H, W) images to ``(features (B, 2048), logits (B, K))`` in float32.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from emca import weights
from emca.errors import ConfigError, WeightsError

INCEPTION_SIZE = 299
BACKBONES = ("torchvision", "tf")
# how each backbone brings images to 299x299, recorded in reports and cache keys
BACKBONE_RESIZE = {"torchvision": "bilinear (torch, align_corners=False)", "tf": "bilinear (TF1-compatible)"}


class TorchvisionInceptionFeatures(nn.Module):
    """torchvision Inception-v3 trunk: uint8 (B, 3, H, W) -> (pool features (B, 2048), logits (B, 1000))."""

    def __init__(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().__init__()
        network = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            network.load_state_dict(state_dict)
        except RuntimeError as err:
            raise WeightsError(
                f"The Inception weight file does not fit torchvision's Inception-v3 ({str(err).splitlines()[0]}); "
                f"expected {weights.WEIGHT_FILES['inception_torchvision'].filename}."
            ) from err
        self.trunk = nn.Sequential(
            network.Conv2d_1a_3x3,
            network.Conv2d_2a_3x3,
            network.Conv2d_2b_3x3,
            network.maxpool1,
            network.Conv2d_3b_1x1,
            network.Conv2d_4a_3x3,
            network.maxpool2,
            network.Mixed_5b,
            network.Mixed_5c,
            network.Mixed_5d,
            network.Mixed_6a,
            network.Mixed_6b,
            network.Mixed_6c,
            network.Mixed_6d,
            network.Mixed_6e,
            network.Mixed_7a,
            network.Mixed_7b,
            network.Mixed_7c,
            network.avgpool,
        )
        self.classifier = network.fc
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.classifier.weight.device
        unit = images.to(device=device, dtype=torch.float32) / 255.0
        unit = F.interpolate(unit, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        features = self.trunk(2.0 * unit - 1.0).flatten(1)
        return features, self.classifier(features)


class TFInceptionFeatures(nn.Module):
    """torch-fidelity's TF-ported Inception: uint8 (B, 3, H, W) -> (features (B, 2048), logits (B, 1008))."""

    def __init__(self, weight_path: str | os.PathLike) -> None:
        super().__init__()
        self.extractor = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weight_path)
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.extractor.fc.weight.device
        features, logits = self.extractor(images.to(device=device, dtype=torch.uint8))
        return features, logits


def load_inception(
    backbone: str,
    weights_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    disable_hint: str = "",
) -> nn.Module:
    """Build the ``backbone`` ("torchvision" or "tf") from its local weight file, in eval mode on ``device``.

    Raises:
        WeightsError: the weight file is missing, unreadable or of the wrong network.
    """
    if backbone == "torchvision":
        state = weights.load_state_dict("inception_torchvision", weights_dir, disable_hint)
        return TorchvisionInceptionFeatures(state).to(device)
    if backbone == "tf":
        # the safe (tensors-only) load validates the file before torch-fidelity reads it with its own loader
        weights.load_state_dict("inception_tf", weights_dir, disable_hint)
        path = weights.resolve("inception_tf", weights_dir, disable_hint)
        try:
            return TFInceptionFeatures(path).to(device)
        except RuntimeError as err:
            raise WeightsError(
                f"'{path}' does not fit torch-fidelity's Inception ({str(err).splitlines()[0]})."
            ) from err
    raise ConfigError(f"FID / IS field 'backbone' must be one of {list(BACKBONES)}, got {backbone!r}.")
