"""The validation metrics logged while training: SSIM under the PATN protocol's conventions and L1.

Validation uses the same SSIM as ``emca eval`` (Gaussian sigma 1.5 window, population covariance,
uint8 levels, data range = the generated image's max - min), so ``val/ssim`` and the best-checkpoint
choice are on the scale of the published tables. The DeepFashion white padding is the one difference:
emca eval pads (40 px each side), validation scores the unpadded images unless ``white_padding`` asks for
the same padding (``model.validation_white_padding=40``), which makes ``val/ssim`` equal emca eval's SSIM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from emca.metrics.images import to_uint8
from emca.metrics.ssim import SSIMWindow, generated_range, pad_white, structural_similarity


class ValidationMetrics(nn.Module):
    """Accumulates per-image PATN SSIM and L1 over a validation epoch (synchronised across DDP ranks)."""

    def __init__(self, white_padding: int = 0) -> None:
        super().__init__()
        self.white_padding = white_padding
        self.ssim = MeanMetric()
        self.l1 = MeanMetric()
        self.window = SSIMWindow()

    def update(self, generated: Tensor, target: Tensor) -> None:
        """generated, target: (B, 3, H, W) images in [-1, 1]."""
        generated_levels = pad_white(to_uint8(generated.float()), self.white_padding)
        target_levels = pad_white(to_uint8(target.float()), self.white_padding)
        ssim = structural_similarity(generated_levels, target_levels, generated_range(generated_levels), self.window)
        self.ssim.update(ssim.float())
        self.l1.update(F.l1_loss(generated.float(), target.float(), reduction="none").mean(dim=(1, 2, 3)))

    @property
    def protocol(self) -> str:
        """What val/ssim is, for the progress lines."""
        padding = f"{self.white_padding} px white padding" if self.white_padding else "no white padding"
        return f"PATN SSIM, {padding}"

    def compute(self) -> dict[str, torch.Tensor]:
        """{"ssim": mean SSIM, "l1": mean L1 in [-1, 1] units} over everything seen since the last reset."""
        return {"ssim": self.ssim.compute(), "l1": self.l1.compute()}

    def reset(self) -> None:
        self.ssim.reset()
        self.l1.reset()
