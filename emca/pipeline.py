"""``PoseTransferPipeline``: a trained generator ready for inference, the one place that turns keypoints into
its inputs and runs it (device, batching, autocast, memory format).

    pipeline = PoseTransferPipeline.from_pretrained("RUN/checkpoints/best.ckpt")   # or a folder, or hf://...
    generated = pipeline(source_images, source_keypoints, target_keypoints)        # (B, 3, H, W) in [-1, 1]
    pictures = pipeline.to_pil(generated)

``emca infer``, ``emca demo``, ``emca eval``'s generation, ``emca personalize`` and ``emca figures`` all
generate through it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from emca.build import image_frame
from emca.checkpoint import DEFAULT_LIMITS, LoadLimits
from emca.cli import resolve_device
from emca.data.keypoints import DEFAULT_SIGMA, pose_heatmaps
from emca.metrics.images import to_uint8
from emca.personalize.adapter import load_generator_with_adapter


class PoseTransferPipeline:
    """A generator in eval mode plus the frame and pose-map width it was trained with.

    Args:
        generator: ``generator(source_image, source_pose, target_pose) -> image``, each (B, C, H, W).
        height: the generator's image height.
        width: the generator's image width.
        sigma: the Gaussian width of the pose maps it was trained on.
        device: where it runs; inputs are moved there and results come back on the CPU.
        batch_size: at most this many pairs per forward pass.
        autocast_dtype: run under ``torch.autocast`` in this dtype (e.g. ``torch.bfloat16``); None: fp32.
        channels_last: run the generator and its inputs in the channels-last memory format.
        data: the data config stored with the model (root, preset, size, sigma), for callers that need it.
    """

    def __init__(
        self,
        generator: nn.Module,
        height: int,
        width: int,
        sigma: float = DEFAULT_SIGMA,
        device: torch.device | str = "cpu",
        batch_size: int = 16,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        data: dict[str, Any] | None = None,
    ) -> None:
        assert batch_size > 0 and height > 0 and width > 0 and sigma > 0
        self.device = torch.device(device)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = generator.to(self.device, memory_format=memory_format).eval()
        self.height, self.width, self.sigma = height, width, sigma
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        self.memory_format = memory_format
        self.data = data or {}

    @classmethod
    def from_pretrained(
        cls,
        ckpt: str | os.PathLike,
        adapter: str | os.PathLike | None = None,
        adapter_scale: float = 1.0,
        device: torch.device | str = "auto",
        limits: LoadLimits = DEFAULT_LIMITS,
        **options: Any,
    ) -> PoseTransferPipeline:
        """Load a model: a training checkpoint, an exported folder or ``hf://OWNER/NAME``, with a MoA adapter
        on top when given (``adapter_scale`` in [0, 1] scales its routing). A model whose tensors are not all
        finite, or whose generator would be larger than ``limits`` allow, is refused before it is built.
        ``options`` are the constructor's ``batch_size``, ``autocast_dtype`` and ``channels_last``."""
        resolved = resolve_device(device)
        generator, hyper_parameters = load_generator_with_adapter(ckpt, adapter, resolved, adapter_scale, limits)
        data = hyper_parameters["data"]
        height, width, sigma = image_frame(data, str(ckpt))
        return cls(generator, height, width, sigma, resolved, data=data, **options)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the images the generator takes and makes."""
        return self.height, self.width

    def pose_maps(self, keypoints: np.ndarray | Tensor | Sequence[np.ndarray]) -> Tensor:
        """(B, 18, 2) (row, col) keypoints in the model's frame (negative: missing) -> (B, 18, H, W) maps."""
        return torch.stack([pose_heatmaps(np.asarray(points), *self.size, sigma=self.sigma) for points in keypoints])

    @torch.no_grad()
    def generate(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> Tensor:
        """The generator on pose maps: (B, 3, H, W) in [-1, 1] and two (B, 18, H, W) -> (B, 3, H, W) float32
        on the CPU, ``batch_size`` pairs at a time."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        results = []
        for start in range(0, len(source_image), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            inputs = [
                tensor[chunk].to(self.device, memory_format=self.memory_format)
                for tensor in (source_image, source_pose, target_pose)
            ]
            with autocast:
                results.append(self.generator(*inputs).float().cpu())
        return torch.cat(results)

    def __call__(
        self,
        source_image: Tensor,
        source_keypoints: np.ndarray | Tensor | Sequence[np.ndarray],
        target_keypoints: np.ndarray | Tensor | Sequence[np.ndarray],
    ) -> Tensor:
        """Pose transfer: source images (B, 3, H, W) in [-1, 1] with their (B, 18, 2) keypoints, and the
        target keypoints (B, 18, 2), all in the model's frame -> generated images (B, 3, H, W) in [-1, 1]."""
        assert source_image.shape[-2:] == self.size, f"images {tuple(source_image.shape)} for a {self.size} model"
        return self.generate(source_image, self.pose_maps(source_keypoints), self.pose_maps(target_keypoints))

    @staticmethod
    def to_pil(images: Tensor) -> list[Image.Image]:
        """(B, 3, H, W) in [-1, 1] -> B RGB pictures, each level rounded to the nearest of 0..255."""
        return [Image.fromarray(pixels) for pixels in to_uint8(images).permute(0, 2, 3, 1).numpy()]

    @staticmethod
    def from_uint8(pixels: np.ndarray) -> Tensor:
        """An (H, W, 3) uint8 picture -> (3, H, W) float32 in [-1, 1], as the generator takes it."""
        return torch.tensor(pixels).permute(2, 0, 1).float().div(127.5).sub(1)
