"""Batched SSIM in torch with the exact semantics of ``skimage.metrics.structural_similarity``.

The published pose-transfer numbers come from skimage, called per image on HxWx3 arrays:
PATN / XingGAN use ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=generated.max() - generated.min()`` on uint8 images; GFLA / PIDM use a 51x51 uniform
window with the sample covariance on [0, 1] images. skimage filters each channel, drops a border of
``(win_size - 1) // 2`` pixels (so the border mode never matters) and averages the SSIM map over the
remaining pixels and the channels. This module reproduces that with separable 'valid' convolutions,
in float64, on whatever device the images are on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emca.errors import InputShapeError
from emca.options import bounded

# skimage's gaussian window follows scipy.ndimage: radius = int(truncate * sigma + 0.5)
GAUSSIAN_TRUNCATE = 3.5


@dataclass(frozen=True)
class SSIMWindow:
    """How local statistics are weighted: a Gaussian (``sigma``) or a uniform ``win_size`` box.

    ``win_size`` (odd) also sets the border that is cropped before averaging; for a Gaussian window
    it defaults to the filter width, 11 taps for sigma 1.5, as in skimage.
    """

    gaussian_weights: bool = True
    sigma: float = bounded(1.5, exclusive_minimum=0)
    win_size: int | None = bounded(None, kind=int, minimum=1)
    use_sample_covariance: bool = False
    k1: float = bounded(0.01, exclusive_minimum=0)
    k2: float = bounded(0.03, exclusive_minimum=0)

    def problems(self, path: str) -> list[str]:
        """What does not make a window (a protocol config is checked with these where ``emca eval`` starts)."""
        if self.win_size is not None and self.win_size % 2 == 0:
            return [f"{path}.win_size: SSIM's 'win_size' must be a positive odd number, got {self.win_size}."]
        if self.win_size is None and not self.gaussian_weights:
            return [f"{path}.win_size: SSIM with a uniform window needs 'win_size' (GFLA uses 51)."]
        if self.gaussian_weights and self.win_size is not None and self.win_size < 2 * self.radius + 1:
            return [
                f"{path}.win_size: SSIM 'win_size' {self.win_size} is smaller than the Gaussian filter "
                f"({2 * self.radius + 1} taps for sigma {self.sigma}); leave win_size unset to use the filter width."
            ]
        return []

    @property
    def radius(self) -> int:
        if self.gaussian_weights:
            return int(GAUSSIAN_TRUNCATE * self.sigma + 0.5)
        return (self.win_size - 1) // 2

    @property
    def crop_size(self) -> int:
        return self.win_size if self.win_size is not None else 2 * self.radius + 1

    def kernel_1d(self, device: torch.device) -> torch.Tensor:
        """Normalised 1-D filter taps (2 * radius + 1,) in float64."""
        offsets = torch.arange(-self.radius, self.radius + 1, dtype=torch.float64, device=device)
        if self.gaussian_weights:
            taps = torch.exp(-0.5 * offsets**2 / self.sigma**2)
        else:
            taps = torch.ones_like(offsets)
        return taps / taps.sum()


def _local_mean(planes: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of (N, 1, H, W) planes -> (N, 1, H - 2r, W - 2r)."""
    taps = kernel.numel()
    filtered = F.conv2d(planes, kernel.view(1, 1, taps, 1))
    return F.conv2d(filtered, kernel.view(1, 1, 1, taps))


def structural_similarity(
    generated: torch.Tensor,
    reference: torch.Tensor,
    data_range: torch.Tensor | float,
    window: SSIMWindow,
) -> torch.Tensor:
    """Mean SSIM per image, equal to skimage's ``structural_similarity(..., channel_axis=-1)``.

    Args:
        generated: (B, C, H, W) images, any real dtype (uint8 images are used as 0..255 values).
        reference: (B, C, H, W) images on the same scale.
        data_range: dynamic range R of the values (C1 = (k1 R)^2, C2 = (k2 R)^2): a number, or a
            (B,) tensor for a per-image range such as :func:`generated_range`.
        window: the weighting window and covariance convention.

    Returns:
        (B,) float64 SSIM of each image, averaged over channels and the cropped pixels.
    """
    if generated.shape != reference.shape or generated.dim() != 4:
        raise ValueError(
            f"SSIM needs two (B, C, H, W) tensors of one shape, got {tuple(generated.shape)} "
            f"and {tuple(reference.shape)}"
        )
    assert window.sigma > 0 and not window.problems("window"), window
    batch, channels, height, width = generated.shape
    if min(height, width) < window.crop_size:
        raise InputShapeError(
            f"SSIM window of {window.crop_size} pixels does not fit images of {height}x{width}; "
            "use a smaller win_size or sigma."
        )
    generated = generated.to(torch.float64)
    reference = reference.to(device=generated.device, dtype=torch.float64)
    kernel = window.kernel_1d(generated.device)

    # the five local moments of every channel, filtered in one batched convolution
    moments = torch.stack(
        [generated, reference, generated * generated, reference * reference, generated * reference], dim=2
    )
    filtered = _local_mean(moments.reshape(-1, 1, height, width), kernel)
    filtered = filtered.view(batch, channels, 5, *filtered.shape[-2:])
    mean_g, mean_r, mean_gg, mean_rr, mean_gr = filtered.unbind(dim=2)

    points = window.crop_size**2
    covariance_norm = points / (points - 1) if window.use_sample_covariance else 1.0
    var_g = covariance_norm * (mean_gg - mean_g * mean_g)
    var_r = covariance_norm * (mean_rr - mean_r * mean_r)
    cov_gr = covariance_norm * (mean_gr - mean_g * mean_r)

    data_range = torch.as_tensor(data_range, dtype=torch.float64, device=generated.device)
    data_range = data_range.reshape(-1, 1, 1, 1) if data_range.dim() else data_range
    c1 = (window.k1 * data_range) ** 2
    c2 = (window.k2 * data_range) ** 2
    ssim_map = ((2 * mean_g * mean_r + c1) * (2 * cov_gr + c2)) / ((mean_g**2 + mean_r**2 + c1) * (var_g + var_r + c2))

    # filtering already removed `radius` pixels per side; skimage crops (crop_size - 1) // 2
    extra = (window.crop_size - 1) // 2 - window.radius
    if extra:
        ssim_map = ssim_map[..., extra:-extra, extra:-extra]
    return ssim_map.mean(dim=(1, 2, 3))


def generated_range(generated: torch.Tensor) -> torch.Tensor:
    """Per-image ``max - min`` over all channels and pixels of (B, C, H, W): the PATN data_range."""
    flat = generated.reshape(generated.shape[0], -1).to(torch.float64)
    return flat.amax(dim=1) - flat.amin(dim=1)


def pad_white(images: torch.Tensor, pixels: int) -> torch.Tensor:
    """Add ``pixels`` columns of white (255) on the left and right of uint8 (B, C, H, W) images.

    PATN's DeepFashion scripts score 256x176 images padded back to 256x256 this way, which raises SSIM.
    """
    if pixels == 0:
        return images
    return F.pad(images, (pixels, pixels), value=255)
