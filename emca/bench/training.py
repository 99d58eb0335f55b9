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
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from emca.bench.timing import median_milliseconds, peak_mebibytes
from emca.build import build_discriminators, build_generator
from emca.data.batch import IMAGE_CHANNELS, PoseTransferBatch
from emca.data.keypoints import NUM_JOINTS
from emca.errors import ConfigError
from emca.losses import LossOptions, PoseTransferLoss
from emca.module import adam
from emca.networks.discriminator import DiscriminatorPair
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


def train_iteration(
    generator: Callable[..., Tensor],
    discriminators: DiscriminatorPair,
    loss: PoseTransferLoss,
    optimizers: Sequence[torch.optim.Optimizer],
    batch: PoseTransferBatch,
    precision: str,
    device: torch.device,
) -> None:
    """One iteration as the training module takes it: G (discriminators frozen), then D_PP, then D_PB."""
    discriminators.requires_grad_(False)  # as toggle_optimizer does in the training module
    with _autocast(precision, device):
        generated = generator(batch.source_image, batch.source_pose, batch.target_pose)
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


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one whole-model measurement runs: a model config (with its attention backend), a batch shape, a
    device, and how many warm-up and timed repetitions."""

    name: str
    model: dict[str, Any]
    backend: str
    batch: int
    height: int
    width: int
    device: torch.device
    warmup: int
    repetitions: int

    def measurement(self, precision: str, compiled: bool = False) -> ModelMeasurement:
        return ModelMeasurement(self.name, self.backend, precision, compiled, self.batch, self.height, self.width)


def _timed(
    workload: Workload, result: ModelMeasurement, make_step: Callable[[], Callable[[], object]]
) -> ModelMeasurement:
    """``result`` with the median time of the step ``make_step`` builds, the images per second it gives and its
    peak memory. A model that cannot be built (an invalid combination of options) or that runs out of memory is
    recorded as skipped, with the reason."""
    device = workload.device
    try:
        step = make_step()
        result.step_ms = median_milliseconds(step, device, workload.warmup, workload.repetitions)
        result.images_per_second = result.batch / (result.step_ms / 1e3)
        result.peak_mib = peak_mebibytes(step, device)
    except ConfigError as error:
        result.skipped = str(error).split(";")[0]
    except torch.OutOfMemoryError:
        result.skipped = "out of memory"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def _loss_without_perceptual(model: dict[str, Any]) -> PoseTransferLoss:
    """The model's objective without the VGG19 term (it needs the weights, and costs every variant the same)."""
    options = parse(LossOptions, model.get("loss"), "model.loss")
    return PoseTransferLoss(dataclasses.replace(options, lambda_perceptual=0.0))


def _optimizers(networks: Sequence[torch.nn.Module]) -> list[torch.optim.Optimizer]:
    return [adam(network.parameters(), 1e-4, (0.5, 0.999)) for network in networks]


def measure_training(workload: Workload, precision: str, compiled: bool) -> ModelMeasurement:
    """The median time of one training iteration and its peak memory beyond the networks and the batch."""
    device = workload.device

    def make_iteration() -> Callable[[], None]:
        generator = build_generator(workload.model).to(device)
        discriminators = build_discriminators(workload.model).to(device)
        loss = _loss_without_perceptual(workload.model)
        forward = torch.compile(generator) if compiled else generator
        optimizers = _optimizers((generator, discriminators.appearance, discriminators.pose))
        batch = random_batch(workload.batch, workload.height, workload.width, device)
        return lambda: train_iteration(forward, discriminators, loss, optimizers, batch, precision, device)

    return _timed(workload, workload.measurement(precision, compiled), make_iteration)


def measure_inference(workload: Workload, precision: str) -> ModelMeasurement:
    """Generated images per second in eval mode without gradients."""

    def make_generate() -> Callable[[], Tensor]:
        generator = build_generator(workload.model).to(workload.device).eval()
        batch = random_batch(workload.batch, workload.height, workload.width, workload.device)

        def generate() -> Tensor:
            with torch.no_grad(), _autocast(precision, workload.device):
                return generator(batch.source_image, batch.source_pose, batch.target_pose)

        return generate

    return _timed(workload, workload.measurement(precision), make_generate)


def measure_generator(workload: Workload, precision: str = "32-true") -> ModelMeasurement:
    """The generator alone in training mode, in ``precision`` (32-true or bf16-mixed): forward+backward time and
    peak memory beyond the weights, the gradient buffers and the batch (the activation memory a training step
    needs for it)."""

    def make_forward_backward() -> Callable[[], None]:
        generator = build_generator(workload.model).to(workload.device).train()
        batch = random_batch(workload.batch, workload.height, workload.width, workload.device)

        def forward_backward() -> None:
            with _autocast(precision, workload.device):
                generated = generator(batch.source_image, batch.source_pose, batch.target_pose)
            generated.float().square().mean().backward()

        forward_backward()  # the gradient buffers exist before anything is measured
        return forward_backward

    return _timed(workload, workload.measurement(precision), make_forward_backward)


def projected_hours(step_ms: float, iterations: int = OFFICIAL_DEEPFASHION_ITERATIONS) -> float:
    """Wall time of ``iterations`` training iterations at ``step_ms`` each (data loading and validation aside)."""
    return step_ms * iterations / 3.6e6


def _config_and_batches(overrides: Sequence[str], iterations: int) -> tuple[dict[str, Any], list[PoseTransferBatch]]:
    """A config's plain containers and its first ``iterations`` training batches, loaded beforehand so that no
    timed loop pays for data loading."""
    from emca.build import build_datamodule
    from emca.config import compose_train

    cfg = compose_train(overrides)
    datamodule = build_datamodule(cfg["data"])
    datamodule.prepare_data()
    datamodule.setup("fit")
    return cfg, [batch for batch, _ in zip(datamodule.train_dataloader(), range(iterations), strict=False)]


def lightning_overhead(overrides: Sequence[str], iterations: int, rounds: int) -> dict[str, Any]:
    """Seconds per iteration of a config's training module under Lightning and of a bare loop over the same
    networks, objective, precision (the config's ``trainer.precision``), memory layout and batches, in
    alternating rounds. The batches are loaded beforehand, so neither side pays for data loading; validation
    is off."""
    import pytorch_lightning as pl

    from emca.module import PoseTransferModule

    cfg, batches = _config_and_batches(overrides, iterations)
    precision = str(cfg["trainer"].get("precision", "32-true"))
    times: dict[str, list[float]] = {"lightning": [], "bare": []}

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
            if trainer.global_step == 3:  # after one warm-up iteration
                self.began = time.perf_counter()

        def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
            times["lightning"].append((time.perf_counter() - self.began) / (len(batches) - 1))

    for _ in range(rounds):
        module = PoseTransferModule(model=cfg["model"], data=cfg["data"], seed=cfg["seed"])
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, precision=precision, max_steps=3 * len(batches), logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            callbacks=[Clock()],
        )  # fmt: skip
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))

        module = PoseTransferModule(model=cfg["model"], data=cfg["data"], seed=cfg["seed"])
        optimizers = module.configure_optimizers()[0]
        device = torch.device("cpu")
        trained = (module.generator, module.discriminators, module.loss, optimizers)
        laid_out = [batch.contiguous(module.memory_format) for batch in batches]
        train_iteration(*trained, laid_out[0], precision, device)
        began = time.perf_counter()
        for batch in laid_out[1:]:
            train_iteration(*trained, batch, precision, device)
        times["bare"].append((time.perf_counter() - began) / (len(batches) - 1))
    lightning, bare = statistics.median(times["lightning"]), statistics.median(times["bare"])
    return {
        "precision": precision,
        "lightning_s": lightning,
        "bare_s": bare,
        "overhead": lightning / bare - 1,
        "rounds": times,
    }


@dataclasses.dataclass(frozen=True)
class TrainingVariant:
    """One way of running the same training iteration on a CPU."""

    threads: int | None = None  # None: torch's current thread count
    precision: str = "32-true"
    channels_last: bool = False
    onednn: bool = True  # torch.backends.mkldnn (oneDNN convolutions); off: torch's own kernels
    compiled: bool = False  # torch.compile of the generator and both discriminators, as model.compile=true


CPU_VARIANTS: dict[str, TrainingVariant] = {
    "baseline": TrainingVariant(),
    "1 thread": TrainingVariant(threads=1),
    "bf16-mixed": TrainingVariant(precision="bf16-mixed"),
    "channels_last": TrainingVariant(channels_last=True),
    "bf16 + channels_last": TrainingVariant(precision="bf16-mixed", channels_last=True),
    "no oneDNN": TrainingVariant(onednn=False),
    "compiled": TrainingVariant(compiled=True),
}


def training_variants(
    overrides: Sequence[str], variants: Sequence[str], iterations: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """Seconds per training iteration (bare loop, real batches of the config's data, loaded beforehand) of each
    variant in ``CPU_VARIANTS``, in ``rounds`` alternating rounds; each variant's networks are built once, from
    the same seed, and warmed up (for ``compiled``: the compile time, reported) before the first round."""
    cfg, batches = _config_and_batches(overrides, iterations)
    device, default_threads = torch.device("cpu"), torch.get_num_threads()
    loss = _loss_without_perceptual(cfg["model"])
    built: dict[str, tuple] = {}
    results: dict[str, dict[str, Any]] = {}

    def run(name: str, variant: TrainingVariant, count: int) -> float:
        generator, discriminators, optimizers, prepared = built[name]
        torch.set_num_threads(variant.threads or default_threads)
        torch.backends.mkldnn.enabled = variant.onednn
        try:
            began = time.perf_counter()
            for batch in prepared[:count]:
                train_iteration(generator, discriminators, loss, optimizers, batch, variant.precision, device)
            return (time.perf_counter() - began) / count
        finally:
            torch.set_num_threads(default_threads)
            torch.backends.mkldnn.enabled = True

    for name in variants:
        variant = CPU_VARIANTS[name]
        torch.manual_seed(cfg["seed"])
        generator, discriminators = build_generator(cfg["model"]), build_discriminators(cfg["model"])
        prepared = batches
        if variant.channels_last:
            generator, discriminators = (n.to(memory_format=torch.channels_last) for n in (generator, discriminators))
            prepared = [batch.contiguous(torch.channels_last) for batch in batches]
        networks = (generator, discriminators.appearance, discriminators.pose)
        if variant.compiled:
            for network in networks:
                network.compile()
        built[name] = (generator, discriminators, _optimizers(networks), prepared)
        results[name] = {"variant": dataclasses.asdict(variant), "warmup_s": run(name, variant, 2) * 2, "rounds": []}
    for _ in range(rounds):
        for name in variants:
            results[name]["rounds"].append(run(name, CPU_VARIANTS[name], len(batches)))
    baseline = statistics.median(results[variants[0]]["rounds"])
    for result in results.values():
        result["s_per_iteration"] = statistics.median(result["rounds"])
        result["speedup"] = baseline / result["s_per_iteration"]
    return results
