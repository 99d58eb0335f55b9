"""Whole-model figures: one training iteration (G, then D_PP, then D_PB) and inference, in a bare PyTorch loop.

The loop is the training module's iteration without Lightning: the generator step with the discriminators
frozen, then each discriminator's step on the detached fake, through the same networks (emca.build) and the
same objective (emca.losses.PoseTransferLoss). The perceptual term is left out, because it needs the VGG19
weights and is the same small cost for every backend. Precision is ``32-true`` or ``bf16-mixed`` (autocast,
as Lightning's plugin does), and ``torch.compile`` of the generator is optional.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor

from emca.bench.timing import median_milliseconds, peak_mebibytes
from emca.build import build_discriminators, build_generator
from emca.data.batch import IMAGE_CHANNELS, PoseTransferBatch
from emca.data.keypoints import NUM_JOINTS
from emca.losses import LossOptions, PoseTransferLoss
from emca.options import parse

PRECISIONS = ("32-true", "bf16-mixed")
# the official DeepFashion recipe: 25,000 + 12,500 iterations of 32 pairs
OFFICIAL_DEEPFASHION_ITERATIONS = 37_500


@dataclasses.dataclass
class ModelMeasurement:
    model: str
    backend: str
    precision: str
    compiled: bool
    batch: int
    height: int
    width: int
    step_ms: float | None = None  # one training iteration, or one inference batch
    images_per_second: float | None = None
    peak_mib: float | None = None
    skipped: str | None = None


def random_batch(batch: int, height: int, width: int, device: torch.device) -> PoseTransferBatch:
    """Pairs of random images in [-1, 1] and random heatmaps: what a step costs does not depend on content."""
    images = torch.rand(2, batch, IMAGE_CHANNELS, height, width, device=device) * 2 - 1
    poses = torch.rand(2, batch, NUM_JOINTS, height, width, device=device)
    keypoints = torch.zeros(batch, NUM_JOINTS, 2, dtype=torch.int64, device=device)
    names = [str(index) for index in range(batch)]
    return PoseTransferBatch(images[0], poses[0], images[1], poses[1], keypoints, keypoints, names, names)


def with_backend(model: dict[str, Any], backend: dict[str, Any]) -> dict[str, Any]:
    model = copy.deepcopy(model)
    model["attention"] = dict(backend)
    return model


def _autocast(precision: str, device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def measure_training(
    name: str,
    model: dict[str, Any],
    backend_name: str,
    precision: str,
    compiled: bool,
    batch_size: int,
    height: int,
    width: int,
    device: torch.device,
    warmup: int,
    repetitions: int,
) -> ModelMeasurement:
    """The median time of one training iteration and its peak memory beyond the networks and the batch."""
    result = ModelMeasurement(name, backend_name, precision, compiled, batch_size, height, width)
    try:
        generator = build_generator(model).to(device)
        discriminators = build_discriminators(model).to(device)
        options = dataclasses.replace(parse(LossOptions, model.get("loss"), "model.loss"), lambda_perceptual=0.0)
        loss = PoseTransferLoss(options)
        forward = torch.compile(generator) if compiled else generator
        networks = (generator, discriminators.appearance, discriminators.pose)
        optimizers = [torch.optim.Adam(network.parameters(), lr=1e-4, betas=(0.5, 0.999)) for network in networks]
        batch = random_batch(batch_size, height, width, device)

        def iteration() -> None:
            discriminators.requires_grad_(False)  # as toggle_optimizer does in the training module
            with _autocast(precision, device):
                generated = forward(batch.source_image, batch.source_pose, batch.target_pose)
                total = loss.generator_terms(discriminators, generated, batch)["loss_generator"]
            optimizers[0].zero_grad(set_to_none=True)
            total.backward()
            optimizers[0].step()
            discriminators.requires_grad_(True)
            for judge, condition, optimizer in (
                (discriminators.appearance, batch.source_image, optimizers[1]),
                (discriminators.pose, batch.target_pose, optimizers[2]),
            ):
                with _autocast(precision, device):
                    judged = loss.discriminator_loss(judge, batch.target_image, generated, condition)
                optimizer.zero_grad(set_to_none=True)
                judged.backward()
                optimizer.step()

        result.step_ms = median_milliseconds(iteration, device, warmup, repetitions)
        result.images_per_second = batch_size / (result.step_ms / 1e3)
        result.peak_mib = peak_mebibytes(iteration, device)
    except torch.OutOfMemoryError:
        result.skipped = "out of memory"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def measure_inference(
    name: str,
    model: dict[str, Any],
    backend_name: str,
    precision: str,
    batch_size: int,
    height: int,
    width: int,
    device: torch.device,
    warmup: int,
    repetitions: int,
) -> ModelMeasurement:
    """Generated images per second in eval mode without gradients."""
    result = ModelMeasurement(name, backend_name, precision, False, batch_size, height, width)
    try:
        generator = build_generator(model).to(device).eval()
        batch = random_batch(batch_size, height, width, device)

        def generate() -> Tensor:
            with torch.no_grad(), _autocast(precision, device):
                return generator(batch.source_image, batch.source_pose, batch.target_pose)

        result.step_ms = median_milliseconds(generate, device, warmup, repetitions)
        result.images_per_second = batch_size / (result.step_ms / 1e3)
        result.peak_mib = peak_mebibytes(generate, device)
    except torch.OutOfMemoryError:
        result.skipped = "out of memory"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def measure_generator(
    name: str,
    model: dict[str, Any],
    backend_name: str,
    batch_size: int,
    height: int,
    width: int,
    device: torch.device,
    warmup: int,
    repetitions: int,
) -> ModelMeasurement:
    """The generator alone in training mode: forward+backward time and peak memory beyond the weights, the
    gradient buffers and the batch (the activation memory a training step needs for it)."""
    result = ModelMeasurement(name, backend_name, "32-true", False, batch_size, height, width)
    try:
        generator = build_generator(model).to(device).train()
        batch = random_batch(batch_size, height, width, device)

        def forward_backward() -> None:
            generator(batch.source_image, batch.source_pose, batch.target_pose).square().mean().backward()

        forward_backward()  # the gradient buffers exist before anything is measured
        result.step_ms = median_milliseconds(forward_backward, device, warmup, repetitions)
        result.images_per_second = batch_size / (result.step_ms / 1e3)
        result.peak_mib = peak_mebibytes(forward_backward, device)
    except torch.OutOfMemoryError:
        result.skipped = "out of memory"
    return result


def projected_hours(step_ms: float, iterations: int = OFFICIAL_DEEPFASHION_ITERATIONS) -> float:
    """Wall time of ``iterations`` training iterations at ``step_ms`` each (data loading and validation aside)."""
    return step_ms * iterations / 3.6e6
