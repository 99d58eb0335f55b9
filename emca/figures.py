"""Figures of what a XingGAN++ generator attends to, for one test pair.

    emca figures --ckpt outputs/train/<run>/checkpoints/best.ckpt --pair-index 0 --out figures/

writes, as PNG:
- ``attention_block<b>.png``: for each chosen query point (a joint of the target pose), the SA and AS
  attention at every scale of block b, overlaid on the generated image (windows: zero outside the
  query's window; pooled levels: on their coarser grid); the query point is marked;
- ``enhanced_attention_block<b>.png`` (branches with EA): the raw correlation E, the refined E' and
  E' - E of the same queries, on the key grid;
- ``fusion_masks.png``: the source, target and generated images and the 21 softmax masks of the
  co-attention fusion (10 appearance candidates, 10 shape candidates, the source image).

Attention is captured by emca.networks.attention_recording.record_attention. A generator without
multi-scale attention blocks (XingGAN) gets the fusion masks only.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from emca.build import build_datamodule
from emca.cli import user_errors
from emca.data.dataset import PoseTransferDataset
from emca.data.keypoints import visible
from emca.errors import ConfigError
from emca.io import atomic_open
from emca.networks.attention_recording import DIRECTIONS, ScaleRecord, attention_scales, record_attention
from emca.networks.generator import NUM_DOWNSAMPLING
from emca.pipeline import PoseTransferPipeline

# neck, right wrist, left ankle: a point on the torso and two on the limbs that move most
DEFAULT_JOINTS = (1, 4, 13)
JOINT_NAMES = (
    "nose",
    "neck",
    "Rsho",
    "Relb",
    "Rwri",
    "Lsho",
    "Lelb",
    "Lwri",
    "Rhip",
    "Rkne",
    "Rank",
    "Lhip",
    "Lkne",
    "Lank",
    "Leye",
    "Reye",
    "Lear",
    "Rear",
)


def save_figure(figure: Figure, path: str | Path, dpi: int = 120) -> None:
    """Render a matplotlib figure to PNG and write it atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def to_picture(image: Tensor) -> Any:
    """(3, H, W) in [-1, 1] -> (H, W, 3) numpy array in [0, 1] for imshow."""
    return ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def query_points(
    target_keypoints: Tensor, joints: Sequence[int], height: int, width: int
) -> list[tuple[str, int, int]]:
    """(name, row, col) of the chosen joints visible in the target pose; the image centre if none is."""
    keypoints = target_keypoints.cpu().numpy()
    shown = visible(keypoints)
    points = [
        (JOINT_NAMES[joint], int(keypoints[joint, 0]), int(keypoints[joint, 1]))
        for joint in joints
        if 0 <= joint < len(JOINT_NAMES) and shown[joint]
    ]
    return points or [("centre", height // 2, width // 2)]


def grid_token(row: int, col: int, height: int, width: int) -> int:
    """The flat index of the block-grid token (features at 1/4 resolution) covering pixel (row, col)."""
    factor = 2**NUM_DOWNSAMPLING
    grid_width = width // factor
    return min(row // factor, height // factor - 1) * grid_width + min(col // factor, grid_width - 1)


def attention_figure(records: list[ScaleRecord], points: list[tuple[str, int, int]], picture: Any) -> Figure:
    """Rows: query point x direction; columns: scales; attention overlaid on ``picture`` (H, W, 3)."""
    height, width = picture.shape[:2]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # maps on any grid stretch over the image
    figure = Figure(figsize=(1.9 * len(records) + 0.5, 2.4 * 2 * len(points) * height / width / 1.6 + 0.6))
    axes = figure.subplots(2 * len(points), len(records), squeeze=False)
    for column, record in enumerate(records):
        for index, (name, row, col) in enumerate(points):
            for direction, label in enumerate(DIRECTIONS):
                axis = axes[2 * index + direction, column]
                axis.imshow(picture, extent=extent)
                axis.imshow(
                    record.attention[direction, index].numpy(),
                    cmap="jet",
                    alpha=0.5,
                    extent=extent,
                    interpolation="nearest",
                )
                axis.plot(col, row, marker="x", color="white", markersize=7, markeredgewidth=2)
                axis.set_title(f"{label} {record.scale}: {name}", fontsize=7)
                axis.axis("off")
    figure.tight_layout()
    return figure


def enhanced_attention_figure(records: list[ScaleRecord], points: list[tuple[str, int, int]]) -> Figure:
    """For each EA branch, query and direction: raw E, refined E' and E' - E on the key grid."""
    rows = [
        (record, index, direction)
        for record in records
        for index in range(len(points))
        for direction in range(len(DIRECTIONS))
    ]
    figure = Figure(figsize=(7.5, 2.0 * len(rows) + 0.4))
    axes = figure.subplots(len(rows), 3, squeeze=False)
    for axes_row, (record, index, direction) in zip(axes, rows, strict=True):
        raw, refined = record.raw[direction, index], record.refined[direction, index]
        both = torch.stack((raw, refined))
        low, high = both.nan_to_num(float("inf")).min().item(), both.nan_to_num(float("-inf")).max().item()
        change = max((refined - raw).abs().nan_to_num(0.0).max().item(), 1e-12)  # symmetric around 0
        for axis, (title, values) in zip(
            axes_row, (("raw E", raw), ("refined E'", refined), ("E' - E", refined - raw)), strict=True
        ):
            difference = title == "E' - E"
            shown = axis.imshow(
                values.numpy(),
                cmap="coolwarm" if difference else "viridis",
                interpolation="nearest",
                vmin=-change if difference else low,
                vmax=change if difference else high,
            )
            if title != "raw E":
                figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
            axis.set_title(f"{DIRECTIONS[direction]} {record.scale} {points[index][0]}: {title}", fontsize=7)
            axis.axis("off")
    figure.tight_layout()
    return figure


def masks_figure(masks: Tensor, source: Tensor, target: Tensor, generated: Tensor) -> Figure:
    """The three images, then the fusion masks (K, 1, H, W) in [0, 1], last one the source's."""
    count = masks.shape[0]
    columns = 7
    figure = Figure(figsize=(columns * 1.3, (1 + -(-count // columns)) * 1.3 * masks.shape[-2] / masks.shape[-1]))
    axes = figure.subplots(1 + -(-count // columns), columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (title, image) in zip(axes[0], (("source", source), ("target", target), ("generated", generated))):
        axis.imshow(to_picture(image))
        axis.set_title(title, fontsize=7)
    half = (count - 1) // 2
    for index in range(count):
        axis = axes[1 + index // columns, index % columns]
        axis.imshow(masks[index, 0].float().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        title = (
            f"appearance {index + 1}"
            if index < half
            else f"shape {index - half + 1}"
            if index < count - 1
            else "source"
        )
        axis.set_title(title, fontsize=7)
    figure.tight_layout()
    return figure


@torch.no_grad()
def make_figures(
    generator: nn.Module,
    sample: dict[str, Any],
    out_dir: str | Path,
    joints: Sequence[int] = DEFAULT_JOINTS,
    blocks: Sequence[int] | None = None,
) -> list[Path]:
    """Write the figures for one pair (an item of PoseTransferDataset) into ``out_dir``; returns the paths.

    ``blocks``: block indices to draw (negative counts from the end; default: the last block).
    """
    out_dir = Path(out_dir)
    source, source_pose, target_pose = (
        sample[key].unsqueeze(0) for key in ("source_image", "source_pose", "target_pose")
    )
    device = next(generator.parameters()).device
    source, source_pose, target_pose = source.to(device), source_pose.to(device), target_pose.to(device)
    height, width = source.shape[-2:]
    points = query_points(sample["target_keypoints"], joints, height, width)
    records: list[ScaleRecord] = []

    def run() -> tuple[Tensor, Tensor]:
        return generator.fusion.candidates_and_masks(*generator.fusion_inputs(source, source_pose, target_pose), source)

    if attention_scales(generator):
        with record_attention(generator, [grid_token(row, col, height, width) for _, row, col in points]) as recorder:
            candidates, masks = run()
        records = recorder.records
    else:
        candidates, masks = run()
    generated = (candidates * masks).sum(1)[0]
    written = [out_dir / "fusion_masks.png"]
    save_figure(masks_figure(masks[0], source[0], sample["target_image"], generated), written[0])

    num_blocks = len(generator.blocks)
    chosen = list(blocks) if blocks is not None else [-1]
    missing = [block for block in chosen if not -num_blocks <= block < num_blocks]
    if missing:
        raise ConfigError(
            f"--blocks: no block {missing}; the generator has {num_blocks} blocks (0 to {num_blocks - 1})."
        )
    for block in sorted({block % num_blocks for block in chosen}):
        block_records = [record for record in records if record.block == block]
        if not block_records:
            continue
        path = out_dir / f"attention_block{block}.png"
        save_figure(attention_figure(block_records, points, to_picture(generated)), path)
        written.append(path)
        enhanced = [record for record in block_records if record.refined is not None]
        if enhanced:
            path = out_dir / f"enhanced_attention_block{block}.png"
            save_figure(enhanced_attention_figure(enhanced, points), path)
            written.append(path)
    return written


def test_pair(data: dict[str, Any], pair_index: int, data_root: str | None, ckpt: str) -> dict[str, Any]:
    """Test pair ``pair_index`` of the dataset a model was trained on (its stored data config ``data``;
    ``data_root`` overrides its root)."""
    data_cfg = dict(data)
    if not data_cfg:
        raise ConfigError("The checkpoint stores no data config; it was not written by `emca train`.")
    if data_root is not None:
        data_cfg["root"] = data_root
    datamodule = build_datamodule(data_cfg, source=ckpt)
    dataset = PoseTransferDataset(
        datamodule.root, datamodule.layout, datamodule.test_split, sigma=datamodule.sigma, validate=False
    )
    if not 0 <= pair_index < len(dataset):
        raise ConfigError(
            f"--pair-index {pair_index}: the test split of '{datamodule.root}' has {len(dataset)} pairs "
            f"(valid: 0 to {len(dataset) - 1})."
        )
    return dataset[pair_index]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="emca figures", description="Attention and fusion-mask figures of one test pair."
    )
    parser.add_argument("--ckpt", required=True, help="an emca training checkpoint (.ckpt)")
    parser.add_argument("--pair-index", type=int, default=0, help="which test pair (default 0)")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder (default figures/)")
    parser.add_argument(
        "--joints",
        type=int,
        nargs="+",
        default=list(DEFAULT_JOINTS),
        help="target-pose joints (COCO-18 indices) used as query points (default: 1 4 13)",
    )
    parser.add_argument("--blocks", type=int, nargs="+", default=None, help="blocks to draw (default: the last)")
    parser.add_argument("--data-root", default=None, help="dataset root, if not the one stored in the checkpoint")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    with user_errors():
        pipeline = PoseTransferPipeline.from_pretrained(args.ckpt, device=args.device)
        sample = test_pair(pipeline.data, args.pair_index, args.data_root, args.ckpt)
        for path in make_figures(pipeline.generator, sample, args.out, args.joints, args.blocks):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
