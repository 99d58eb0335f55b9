"""Generating every test pair with a trained generator, one lossless PNG per pair."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from emca.errors import CheckpointError, ConfigError
from emca.io import atomic_save_image
from emca.metrics.images import DEFAULT_NAME_PATTERN, check_name_pattern, pair_file_name

# generator(source_image (B,3,H,W) in [-1,1], source_pose (B,18,H,W), target_pose (B,18,H,W)) -> (B,3,H,W)
Generator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images in [-1, 1] -> uint8 0..255, rounded to the nearest level."""
    return ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def generate_test_pairs(
    generator: Generator,
    dataset: Dataset,
    out_dir: str | Path,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    name_pattern: str = DEFAULT_NAME_PATTERN,
    num_workers: int = 0,
) -> list[Path]:
    """Run ``generator`` on every pair of ``dataset`` (items as ``PoseTransferDataset``'s) in order.

    Each output is written atomically as a PNG named by ``name_pattern`` under ``out_dir``.
    Returns the written paths, in the dataset's pair order.
    """
    check_name_pattern(name_pattern)
    if not name_pattern.lower().endswith(".png"):
        raise ConfigError(
            f"name_pattern {name_pattern!r}: generated images are written losslessly, so it must end in .png."
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    written: list[Path] = []
    for batch in tqdm(loader, desc=f"Generating {len(dataset)} test pairs", unit="batch"):
        source_image = batch["source_image"].to(device)
        generated = generator(source_image, batch["source_pose"].to(device), batch["target_pose"].to(device))
        if generated.shape != source_image.shape:
            raise CheckpointError(
                f"The generator returned images of shape {tuple(generated.shape)} for inputs of shape "
                f"{tuple(source_image.shape)}; it must return (B, 3, H, W) at the dataset's size."
            )
        pixels = to_uint8(generated).permute(0, 2, 3, 1).cpu().numpy()
        for image, source_name, target_name in zip(pixels, batch["source_name"], batch["target_name"]):
            path = out_dir / pair_file_name(name_pattern, source_name, target_name)
            atomic_save_image(Image.fromarray(image), path)
            written.append(path)
    return written
