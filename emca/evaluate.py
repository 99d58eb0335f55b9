"""``emca eval`` (alias ``python eval.py``): find the images (generate them from a checkpoint, or take a
folder of any method's outputs), score them under a protocol, write and print the reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from emca.build import build_datamodule
from emca.checkpoint import LoadLimits, find_latest_checkpoint
from emca.cli import hydra_command, resolve_device
from emca.data.batch import collate_pairs
from emca.data.dataset import DatasetLayout
from emca.errors import CheckpointError, ConfigError, DataError
from emca.io import atomic_save_image
from emca.metrics.definitions import COPY_SOURCE_SUFFIX, GROUND_TRUTH_SUFFIX, FIDSpec, MetricSpec, ReferenceStatistics
from emca.metrics.fid import FeatureStatistics, cached_statistics
from emca.metrics.images import (
    DEFAULT_NAME_PATTERN,
    RESAMPLING,
    check_sizes,
    compression_note,
    locate_generated,
    name_pattern_problem,
    pair_file_name,
    to_uint8,
)
from emca.metrics.inception import BACKBONE_RESIZE, InceptionBackbone
from emca.metrics.report import markdown_table, write_reports
from emca.metrics.scoring import (
    ON_MISSING_WEIGHTS,
    ScoreResult,
    ScoringPairs,
    image_features,
    load_models,
    score,
)
from emca.options import bounded, parse
from emca.pipeline import PoseTransferPipeline
from emca.protocol import parse_protocol

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class EvalOptions:
    """The schema of conf/eval.yaml's own keys (``data`` and ``eval``, the protocol, are checked by their own
    schemas: emca.build and emca.protocol); conf/eval.yaml explains each."""

    ckpt: str | None = bounded(None, kind=str)
    generated_dir: str | None = bounded(None, kind=str)
    adapter: str | None = bounded(None, kind=str)
    adapter_scale: float = bounded(1.0, minimum=0, maximum=1)
    max_parameters: int = bounded(LoadLimits.max_parameters, minimum=1)
    max_activation_gib: float = bounded(LoadLimits.max_activation_gib, exclusive_minimum=0)
    train_runs_dir: str = "outputs/train"
    data_from_checkpoint: bool = True
    name_pattern: str = DEFAULT_NAME_PATTERN
    resize: str | None = bounded(None, kind=str, choices=tuple(RESAMPLING))
    max_pairs: int | None = bounded(None, kind=int, minimum=1)
    metrics: tuple[str, ...] = bounded(("ssim",), kind=str)
    on_missing_weights: str = bounded("skip", choices=ON_MISSING_WEIGHTS)
    fid_backbone: str | None = bounded(None, kind=str)
    fid_reference: str | None = bounded(None, kind=str)
    fid_trust_sha256: str | None = bounded(None, kind=str)
    copy_source_baseline: bool = True
    weights_dir: str | None = bounded(None, kind=str)
    cache_dir: str | None = bounded(None, kind=str)
    device: str = "auto"
    batch_size: int = bounded(16, minimum=1)
    num_workers: int = bounded(0, minimum=0)
    out: str = ""

    def problems(self, path: str) -> list[str]:
        pattern = name_pattern_problem(self.name_pattern)
        return [pattern] if pattern else []


# generator(source_image (B,3,H,W) in [-1,1], source_pose (B,18,H,W), target_pose (B,18,H,W)) -> (B,3,H,W)
Generator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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
    assert name_pattern_problem(name_pattern) is None, name_pattern
    if not name_pattern.lower().endswith(".png"):
        raise ConfigError(
            f"name_pattern {name_pattern!r}: generated images are written losslessly, so it must end in .png."
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_pairs
    )
    written: list[Path] = []
    for batch in tqdm(loader, desc=f"Generating {len(dataset)} test pairs", unit="batch"):
        source_image = batch.source_image.to(device)
        generated = generator(source_image, batch.source_pose.to(device), batch.target_pose.to(device))
        if generated.shape != source_image.shape:
            raise CheckpointError(
                f"The generator returned images of shape {tuple(generated.shape)} for inputs of shape "
                f"{tuple(source_image.shape)}; it must return (B, 3, H, W) at the dataset's size."
            )
        pixels = to_uint8(generated).permute(0, 2, 3, 1).cpu().numpy()
        for image, source_name, target_name in zip(pixels, batch.source_name, batch.target_name):
            path = out_dir / pair_file_name(name_pattern, source_name, target_name)
            atomic_save_image(Image.fromarray(image), path)
            written.append(path)
    return written


def reference_image_files(root: Path, layout: DatasetLayout, split: str) -> list[Path]:
    """Every image file of a split's folder (GFLA's FID reference: the whole training folder)."""
    folder = layout.image_dir_path(root, split)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if len(files) < 2:
        raise DataError(
            f"FID reference split '{split}': '{folder}' holds {len(files)} image(s); at least 2 are needed."
        )
    return files


def folder_reference_statistics(
    root: Path,
    layout: DatasetLayout,
    preset: str,
    cache_dir: str | None,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> ReferenceStatistics:
    """Reference statistics over a split's image folder, cached per dataset, split, backbone, weight file, size
    and resize."""

    def statistics(spec: FIDSpec, backbone: InceptionBackbone) -> tuple[FeatureStatistics, dict[str, Any]]:
        files = reference_image_files(root, layout, spec.reference_split)
        key = {
            "name": preset,
            "root": str(root.resolve()),
            "split": spec.reference_split,
            "backbone": spec.backbone,
            "weights_sha256": backbone.weight_file["weights_sha256"],
            "height": layout.height,
            "width": layout.width,
            "resize": BACKBONE_RESIZE[spec.backbone],
            "images": len(files),
            "files": hashlib.sha256("\n".join(p.name for p in files).encode()).hexdigest(),
        }

        def compute() -> FeatureStatistics:
            description = f"FID reference: {spec.reference_split} ({len(files)} images)"
            return FeatureStatistics.from_features(
                image_features(
                    backbone, files, layout.height, layout.width, description, batch_size, num_workers, device
                )
            )

        stats, path, from_cache = cached_statistics(cache_dir, key, compute)
        return stats, {
            "reference_images": stats.count,
            "reference_folder": str(layout.image_dir_path(root, spec.reference_split)),
            "statistics_cache": str(path) if path else None,
            "statistics_from_cache": from_cache,
        }

    return statistics


def add_baselines(
    result: ScoreResult,
    pairs: ScoringPairs,
    pair_names: list[tuple[str, str]],
    specs: tuple[MetricSpec, ...],
    models: dict[str, nn.Module],
    device: torch.device,
    batch_size: int,
    num_workers: int,
) -> None:
    """Put beside each per-pair metric ``<name>_copy_source``: each pair's source image scored as if it were the
    generated one (FID's baseline comes from :func:`score`), the floor a model has to beat, since a figure alone
    says little (an untrained model's mask-SSIM is high); and beside a metric whose value on the real targets is
    informative (pose accuracy) ``<name>_ground_truth``, the real target scored as if generated: the ceiling."""
    per_pair = [spec for spec in specs if not spec.set_level]
    baselines: dict[str, dict[str, float]] = {}
    if per_pair and pairs.sources is not None:
        copies = ScoringPairs(pairs.sources, pairs.reference, pairs.target_keypoints, pairs.height, pairs.width)
        found = score(copies, pair_names, per_pair, models, None, device, batch_size, num_workers).summary
        baselines[COPY_SOURCE_SUFFIX] = found
    ceilings = [spec for spec in per_pair if spec.ceiling]
    if ceilings:
        truths = ScoringPairs(pairs.reference, pairs.reference, pairs.target_keypoints, pairs.height, pairs.width)
        found = score(truths, pair_names, ceilings, models, None, device, batch_size, num_workers).summary
        baselines[GROUND_TRUTH_SUFFIX] = found
    summary = {}
    for name, value in result.summary.items():
        summary[name] = value
        for suffix, baseline in baselines.items():
            if name in baseline:
                summary[name + suffix] = baseline[name]
    result.summary = summary


def _protocol_config(cfg: Mapping[str, Any], options: EvalOptions) -> dict[str, Any]:
    """The protocol config with the top-level FID / IS overrides (fid_backbone, fid_reference) applied."""
    protocol = (
        OmegaConf.to_container(cfg["eval"], resolve=True) if isinstance(cfg["eval"], DictConfig) else dict(cfg["eval"])
    )
    for definition in (protocol.get("definitions") or {}).values():
        if definition.get("type") == "fid" and options.fid_reference:
            definition["reference_split"] = options.fid_reference
        if definition.get("type") in ("fid", "inception_score") and options.fid_backbone:
            definition["backbone"] = options.fid_backbone
    return protocol


def _source(options: EvalOptions, generator: Generator | None) -> tuple[str | None, str | None]:
    """(checkpoint, generated_dir): exactly one is used; with neither, the newest training checkpoint."""
    ckpt, generated_dir = options.ckpt, options.generated_dir
    if ckpt and generated_dir:
        raise ConfigError(
            "Pass either ckpt=... (generate, then score) or generated_dir=... (score a folder), not both."
        )
    if generator is not None or generated_dir:
        return None, generated_dir
    if ckpt:
        return str(ckpt), None
    runs = options.train_runs_dir
    latest = find_latest_checkpoint(runs, "best.ckpt")
    if latest is None:
        raise ConfigError(
            f"No checkpoint to evaluate: no '{runs}/*/checkpoints/best.ckpt' exists. Train first with "
            "`emca train`, or pass ckpt=PATH.ckpt, or generated_dir=FOLDER to score existing images."
        )
    print(f"evaluating the newest training checkpoint: {latest}")
    return str(latest), None


def evaluate(cfg: DictConfig | Mapping[str, Any], generator: Generator | None = None) -> dict[str, Any]:
    """Run one evaluation as configured by ``conf/eval.yaml``; returns the metrics.json document.

    ``generator`` (a callable as ``emca.checkpoint.load_generator`` returns) replaces the checkpoint,
    for programmatic use.
    """
    names = [field.name for field in dataclasses.fields(EvalOptions)]
    values = {name: cfg[name] for name in names if name in cfg}
    plain = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in values.items()}
    options = parse(EvalOptions, plain, "")
    device = resolve_device(options.device)
    limits = LoadLimits(options.max_parameters, options.max_activation_gib)
    out_dir = Path(options.out)
    checkpoint, generated_dir = _source(options, generator)
    data_cfg, data_source = cfg["data"], None
    adapter, adapter_scale = options.adapter, options.adapter_scale
    if checkpoint is not None:
        pipeline = PoseTransferPipeline.from_pretrained(checkpoint, adapter, adapter_scale, device, limits)
        generator = pipeline.generate  # on the dataset's pose maps; moves the inputs to its device itself
        if options.data_from_checkpoint and pipeline.data:
            data_cfg, data_source = pipeline.data, checkpoint
    if isinstance(data_cfg, DictConfig):
        data_cfg = OmegaConf.to_container(data_cfg, resolve=True)
    datamodule = build_datamodule(data_cfg, source=data_source)
    datamodule.prepare_data()
    dataset = datamodule.test_pairs(options.max_pairs)
    height, width = datamodule.height, datamodule.width
    batch_size, num_workers = options.batch_size, options.num_workers
    protocol_config = _protocol_config(cfg, options)
    protocol = parse_protocol(protocol_config, list(options.metrics), datamodule.preset)
    name_pattern = options.name_pattern
    if generator is not None:
        image_dir = out_dir / "images"
        generate_test_pairs(generator, dataset, image_dir, batch_size, device, name_pattern, num_workers)
        images = {"generated_by": checkpoint or "generator passed in", "folder": str(image_dir)}
        if adapter:
            images["adapter"] = f"{adapter} (scale {adapter_scale})"
    else:
        image_dir = Path(generated_dir)
        images = {"folder": str(image_dir), "name_pattern": name_pattern}
    generated = locate_generated(image_dir, dataset.pairs, name_pattern)
    check_sizes(generated, height, width, options.resize)
    images["resize"] = options.resize or "none (sizes must match)"
    images["compression"] = compression_note(generated)

    models, skipped = load_models(
        protocol.metrics,
        options.weights_dir,
        device,
        options.on_missing_weights,
        trusted_sha256=options.fid_trust_sha256,
    )
    copy_source = options.copy_source_baseline
    pairs = ScoringPairs(
        generated,
        [dataset.image_dir / target for _, target in dataset.pairs],
        [dataset.annotations[target] for _, target in dataset.pairs],
        height,
        width,
        options.resize,
        [dataset.image_dir / source for source, _ in dataset.pairs] if copy_source else None,
    )
    needs_reference = any(spec.set_level for spec in protocol.metrics)
    reference = (
        folder_reference_statistics(
            Path(datamodule.root),
            datamodule.layout,
            datamodule.preset,
            options.cache_dir,
            batch_size,
            num_workers,
            device,
        )
        if needs_reference
        else None
    )
    result = score(pairs, dataset.pairs, protocol.metrics, models, reference, device, batch_size, num_workers)
    result.skipped.update(skipped)
    add_baselines(result, pairs, dataset.pairs, protocol.metrics, models, device, batch_size, num_workers)

    context = {
        "protocol": protocol.name,
        "dataset": {
            "root": str(datamodule.root),
            "preset": datamodule.preset,
            "split": datamodule.test_split,
            "height": height,
            "width": width,
            "pairs": len(dataset),
        },
        "images": images,
        "device": str(device),
        "protocol_notes": list(protocol_config.get("notes") or []),
    }
    paths = write_reports(out_dir, result, context)
    print("\n" + markdown_table(result, context))
    print(f"reports: {', '.join(str(p) for p in paths.values())}")
    return {**context, "metrics": result.summary, "settings": result.details, "skipped": result.skipped}


def main(argv: Sequence[str] | None = None) -> None:
    """``emca eval [key=value ...]`` (``sys.argv[1:]`` when ``argv`` is None); conf/eval.yaml lists the keys.

    Examples::

        emca eval ckpt=outputs/train/<run>/checkpoints/best.ckpt               # generate + score
        emca eval ckpt=... eval=gfla data=deepfashion                           # GFLA protocol
        emca eval generated_dir=results/ data=market data.root=/data/market     # any method's images
        emca eval generated_dir=results/ metrics=[ssim,psnr]                    # no pretrained weights
        emca eval ... fid_backbone=tf fid_reference=test resize=bicubic
    """
    hydra_command("eval", evaluate, argv)
