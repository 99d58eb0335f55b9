"""Peak signal-to-noise ratio per image (skimage ``peak_signal_noise_ratio`` semantics)."""

from __future__ import annotations

import torch


def peak_signal_noise_ratio(
    generated: torch.Tensor, reference: torch.Tensor, data_range: float = 255.0
) -> torch.Tensor:
    """PSNR in dB of each image: 10 log10(R^2 / MSE), the MSE over all channels and pixels.

    Args:
        generated: (B, C, H, W) images; uint8 images are used as 0..255 values.
        reference: (B, C, H, W) images on the same scale.
        data_range: R, the value range (255 for uint8; GFLA's data_range=1 on [0, 1] images is the same).

    Returns:
        (B,) float64 PSNR; ``inf`` for an image identical to its reference.
    """
    difference = generated.to(torch.float64) - reference.to(device=generated.device, dtype=torch.float64)
    mse = difference.pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)
