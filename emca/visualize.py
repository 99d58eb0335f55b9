"""Image sheets: rows of pairs shown side by side (sample grids during training, inference sheets)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from emca.data.skeleton import skeleton_images


def image_sheet(columns: Sequence[Tensor], padding: int = 2) -> Image.Image:
    """Columns of images (each (B, 3, H, W) in [-1, 1]) laid out as B rows -> one RGB PIL image."""
    tiles = torch.stack([column.detach().float().cpu() for column in columns], dim=1).flatten(0, 1)
    grid = make_grid(tiles, nrow=len(columns), padding=padding, normalize=True, value_range=(-1, 1))
    return Image.fromarray(grid.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


# pictures shown to people are at least this tall: a 32x24 model's images are thumbnails otherwise
VIEWABLE_HEIGHT = 256


def enlarged(image: Image.Image, unit_height: int | None = None, height: int = VIEWABLE_HEIGHT) -> Image.Image:
    """``image`` scaled up by the smallest whole factor that makes ``unit_height`` (default: the image's height;
    for a sheet, one picture's) at least ``height`` pixels, with nearest-neighbour sampling so every model pixel
    stays a sharp square; unchanged if already that tall."""
    factor = max(1, math.ceil(height / (unit_height or image.height)))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def pose_transfer_sheet(
    source_image: Tensor,
    source_keypoints: Tensor,
    target_keypoints: Tensor,
    generated: Tensor,
    target_image: Tensor | None = None,
) -> Image.Image:
    """source | source pose | target pose | generated [| target] for (B, ...) batches of one size."""
    height, width = generated.shape[-2:]
    columns = [
        source_image,
        skeleton_images(source_keypoints.cpu(), height, width),
        skeleton_images(target_keypoints.cpu(), height, width),
        generated,
    ]
    if target_image is not None:
        columns.append(target_image)
    return image_sheet(columns)
