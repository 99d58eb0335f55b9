"""Tiny PATN-layout datasets written into a temporary folder, shared by the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from emca.data.annotations import write_annotations, write_pairs
from emca.data.dataset import DatasetLayout, make_layout
from emca.data.keypoints import MISSING, NUM_JOINTS, REQUIRED_FOR_PAIRS
from emca.data.synthetic import render_identity

VGG_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's file name, which emca.weights looks for

# photos for inference and the demo: larger than the tiny model's 32x16 and of another aspect ratio, so that
# framing is exercised
PHOTO_SIZE = (96, 64)


def random_keypoints(rng: np.random.Generator, height: int, width: int, missing: int = 3) -> np.ndarray:
    """(18, 2) (row, col) inside the image; ``missing`` joints other than hips/shoulders set to -1."""
    keypoints = np.stack([rng.integers(0, height, NUM_JOINTS), rng.integers(0, width, NUM_JOINTS)], axis=1)
    optional = [j for j in range(NUM_JOINTS) if j not in REQUIRED_FOR_PAIRS]
    keypoints[rng.choice(optional, size=missing, replace=False)] = MISSING
    return keypoints.astype(np.int64)


def random_image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def make_split(
    root: Path,
    layout: DatasetLayout,
    split: str,
    people: int = 2,
    images_per_person: int = 3,
    seed: int = 0,
    suffix: str = ".png",
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Write images, annotation and all same-person pairs of one split; returns (annotations, pairs)."""
    rng = np.random.default_rng(seed)
    image_dir = layout.image_dir_path(root, split)
    image_dir.mkdir(parents=True, exist_ok=True)
    annotations: dict[str, np.ndarray] = {}
    pairs: list[tuple[str, str]] = []
    for person in range(people):
        names = [f"person{person:02d}_{view}{suffix}" for view in range(images_per_person)]
        for name in names:
            random_image(rng, layout.height, layout.width).save(image_dir / name)
            annotations[name] = random_keypoints(rng, layout.height, layout.width)
        pairs += [(a, b) for a in names for b in names if a != b]
    write_annotations(layout.annotation_path(root, split), annotations)
    write_pairs(layout.pairs_path(root, split), pairs)
    return annotations, pairs


def make_dataset(root: Path, height: int = 32, width: int = 16, seed: int = 0) -> DatasetLayout:
    """A synthetic-preset dataset with train (2 people x 3 images) and test (3 people x 2 images) splits."""
    layout = make_layout("synthetic", height=height, width=width)
    make_split(root, layout, "train", people=2, images_per_person=3, seed=seed)
    make_split(root, layout, "test", people=3, images_per_person=2, seed=seed + 1)
    return layout


def write_person_photos(folder: Path) -> dict[str, np.ndarray]:
    """Two synthetic photos of one person (p0.png, p1.png, PHOTO_SIZE) -> their keypoints in the photos' frame."""
    annotations = {}
    for pose, (image, keypoints) in enumerate(render_identity(3, 0, 2, *PHOTO_SIZE)):
        Image.fromarray(image).save(folder / f"p{pose}.png")
        annotations[f"p{pose}.png"] = keypoints
    return annotations


def pose_json_text(keypoints: np.ndarray, size: tuple[int, int] | None = PHOTO_SIZE) -> str:
    """The ``{"keypoints": [[x, y], ...], "height", "width"}`` pose JSON that emca.infer reads (no size: none)."""
    points = [[int(c), int(r)] if r >= 0 else None for r, c in keypoints]
    content = {"keypoints": points} if size is None else {"keypoints": points, "height": size[0], "width": size[1]}
    return json.dumps(content)


def write_fake_vgg19(torch_home: Path) -> dict[str, torch.Tensor]:
    """A TORCH_HOME holding a seeded VGG19 state dict with torchvision's keys and shapes; returns the state.

    The classifier (123 M unused parameters) is stored as stride-0 tensors so the file stays small.
    """
    with torch.device("meta"):
        vgg = torchvision.models.vgg19(weights=None)
    generator = torch.Generator().manual_seed(0)
    state = {
        name: torch.randn(tensor.shape, generator=generator) * 0.05
        if name.startswith("features.")
        else torch.zeros(()).expand(tensor.shape)
        for name, tensor in vgg.state_dict().items()
    }
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / VGG_FILE)
    return state
