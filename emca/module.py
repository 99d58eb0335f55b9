"""The Lightning module that trains a pose-transfer GAN (XingGAN, XingGAN++) with two discriminators.

One iteration, as in the official code: the generator step (L1 + perceptual + GAN losses of both
discriminators), then the appearance discriminator D_PP (image, source image), then the pose
discriminator D_PB (image, target pose). Manual optimisation; Lightning provides devices, DDP, AMP
(``trainer.precision``), logging and checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import seed_everything
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from emca.build import build_discriminators, build_generator, completed
from emca.checkpoint import last_checkpoint
from emca.data.batch import PoseTransferBatch
from emca.errors import TrainingDiverged
from emca.io import atomic_save_image
from emca.losses import ImagePool, LossOptions, PoseTransferLoss
from emca.metrics.validation import ValidationMetrics
from emca.options import bounded, parse
from emca.visualize import enlarged, pose_transfer_sheet


@dataclass(frozen=True)
class OptimOptions:
    """``model.optim``: Adam for all three networks, constant then linearly decaying learning rate."""

    lr: float = bounded(2.0e-4, exclusive_minimum=0)
    betas: tuple[float, ...] = bounded((0.5, 0.999), minimum=0, exclusive_maximum=1, length=2)
    constant_iterations: int = bounded(25000, minimum=0)
    decay_iterations: int = bounded(12500, minimum=0)

    def problems(self, path: str) -> list[str]:
        if self.constant_iterations + self.decay_iterations == 0:
            return [f"Config fields '{path}.constant_iterations' and '{path}.decay_iterations' are both 0; a run "
                    "needs at least one iteration."]  # fmt: skip
        return []


@dataclass(frozen=True)
class TrainingOptions:
    """``model.ema_decay`` (an EMA generator for validation and export), ``model.grad_clip`` (max norm),
    ``model.validation_white_padding`` (40 on DeepFashion: val/ssim then equals emca eval's PATN SSIM),
    ``model.compile`` (torch.compile the generator and both discriminators) and ``model.channels_last``
    (networks and batches in the channels-last memory layout)."""

    ema_decay: float | None = bounded(None, kind=float, exclusive_minimum=0, exclusive_maximum=1)
    grad_clip: float | None = bounded(None, kind=float, exclusive_minimum=0)
    validation_white_padding: int = bounded(0, minimum=0)
    compile: bool = bounded(False)
    channels_last: bool = bounded(False)


class ConstantThenLinearDecay:
    """Learning-rate factor: 1 for ``constant`` iterations, then linearly down to 0 over ``decay``.

    A callable object rather than a lambda so LambdaLR stores (and restores) its plain-int state.
    """

    def __init__(self, constant: int, decay: int) -> None:
        self.constant = int(constant)
        self.decay = int(decay)

    def __call__(self, iteration: int) -> float:
        if iteration < self.constant or self.decay <= 0:
            return 1.0
        return max(0.0, 1.0 - (iteration - self.constant) / self.decay)


def adam(
    parameters: Iterable[nn.Parameter], lr: float, betas: tuple[float, ...], fused: bool = True
) -> torch.optim.Adam:
    """Adam, with torch's fused kernel on CPU and CUDA unless ``fused`` is false: one kernel over all parameters
    instead of a Python loop over them (torch's CPU default), which made the three optimizer steps of an
    embedded-default iteration about 2-3x faster. The update is the same up to floating-point rounding."""
    parameters = list(parameters)
    fused = fused and all(parameter.device.type in ("cpu", "cuda") for parameter in parameters)
    return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=fused)


def gradients_finite(network: nn.Module) -> bool:
    """Whether every gradient of ``network`` is finite (one reduction, one device sync)."""
    gradients = [p.grad for p in network.parameters() if p.grad is not None]
    if not gradients:
        return True
    return bool(torch.stack([g.isfinite().all() for g in gradients]).all())


# below this largest per-image standard deviation (one 8-bit level, in [-1, 1] units) every generated image
# is flat: the generator has collapsed
COLLAPSED_SPREAD = 2 / 255


class GeneratorModule(pl.LightningModule):
    """What both of emca's LightningModules share: validation of the generator ``self(...)`` returns, also
    after the last iteration of the step budget.

    Subclasses set ``self.val_metrics`` (a :class:`~emca.metrics.validation.ValidationMetrics`) and define
    ``forward(source_image, source_pose, target_pose)``. Logged as ``val/<metric>`` after each validation.
    """

    val_metrics: ValidationMetrics
    max_optimizer_steps: int  # the step budget (Trainer.max_steps), a property of each subclass
    # Lightning counts every optimizer.step() under manual optimisation, so its global_step is this many
    # times the iteration; checkpointing, progress lines and interruption messages convert through it
    optimizer_steps_per_iteration: int

    @property
    def iteration(self) -> int:
        """Iterations completed (Lightning's global_step counts optimizer steps)."""
        return self.global_step // self.optimizer_steps_per_iteration

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # a budget that ends mid-epoch would end without validating the final weights (max_steps stops the
        # loop first); stopping through should_stop makes Lightning validate this last iteration, so the last
        # weights are scored, drawn in a sample grid and can become best.ckpt
        if self.global_step >= self.max_optimizer_steps:
            self.trainer.should_stop = True

    def diverged(self, what: str) -> TrainingDiverged:
        """The error that stops a run whose loss or gradients stopped being finite (``what`` says which)."""
        last = last_checkpoint(self.trainer.default_root_dir)
        saved = f"The last good checkpoint is '{last}'." if last.is_file() else "No checkpoint was written yet."
        return TrainingDiverged(
            f"Training diverged at iteration {self.iteration + 1}: {what}, so the run stopped instead of training "
            f"on. {saved} Try a lower model.optim.lr, model.grad_clip=1.0, smaller loss weights "
            "(model.loss.lambda_*), or check the data for broken images."
        )

    def validation_step(self, batch: PoseTransferBatch, batch_idx: int) -> Tensor:
        generated = self(batch.source_image, batch.source_pose, batch.target_pose)
        self.val_metrics.update(generated, batch.target_image)
        # kept on the device: reading it back per batch would wait for the GPU every step
        spread = generated.detach().flatten(1).float().std(dim=1).max()
        self._largest_spread = torch.maximum(self._largest_spread, spread)
        return generated

    def on_validation_epoch_start(self) -> None:
        self._largest_spread = torch.zeros((), device=self.device)

    def on_validation_epoch_end(self) -> None:
        results = self.val_metrics.compute()
        self.log_dict({f"val/{name}": value for name, value in results.items()}, prog_bar=True, sync_dist=True)
        self.val_metrics.reset()
        # a generator whose every validation image is one flat colour has collapsed (e.g. saturated by a huge
        # learning rate): report it as diverged rather than save and score it as a result
        largest_spread = float(self._largest_spread)
        if not self.trainer.sanity_checking and largest_spread < COLLAPSED_SPREAD:
            raise self.diverged(
                f"every validation image is a constant colour (largest pixel standard deviation "
                f"{largest_spread:.2g} in [-1, 1] units, under one 8-bit level)"
            )


class PoseTransferModule(GeneratorModule):
    """Trains ``model['generator']`` against D_PB and D_PP (``discriminators.pose`` / ``.appearance``).

    Args:
        model: the model config as plain containers (``generator``, ``attention``, ``discriminator``,
            ``loss``, ``optim``, ``ema_decay``, ``grad_clip``); stored in checkpoints.
        data: the data config (stored so evaluation and inference know the resolution and pose sigma).
        weights_dir: where to find VGG19 weights for the perceptual loss (see emca.weights).
        seed: every training epoch starts from the global RNG state seeded with ``seed + epoch``, so a run
            resumed from an epoch-end checkpoint draws the same shuffles and dropout masks as an
            uninterrupted one (Lightning consumes RNG between saving and the next epoch otherwise).
        sample_count: how many validation pairs the sample grid shows.
    """

    optimizer_steps_per_iteration = 3  # the generator, D_PP and D_PB

    def __init__(
        self,
        model: dict[str, Any],
        data: dict[str, Any] | None = None,
        weights_dir: str | None = None,
        seed: int = 0,
        sample_count: int = 8,
    ) -> None:
        super().__init__()
        # the checkpoint stores every generator option, defaults included, so that a default changed in a later
        # emca cannot change the model it describes (an option it lacks is one added after it was written)
        model = {**model, "generator": completed("generator", model["generator"], "model.generator")}
        self.save_hyperparameters()
        self.automatic_optimization = False
        # typed views of options that emca train checked where it started (emca.build.check_model)
        self.loss_options = parse(LossOptions, model.get("loss"), "model.loss")
        self.optim_options = parse(OptimOptions, model.get("optim"), "model.optim")
        options = parse(
            TrainingOptions,
            {field.name: model[field.name] for field in fields(TrainingOptions) if field.name in model},
            "model",
        )
        self.grad_clip = options.grad_clip

        self.generator = build_generator(model)
        self.discriminators = build_discriminators(model)
        # a layout, not a value change: the same parameters, and checkpoints load into either layout
        self.memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        self.generator.to(memory_format=self.memory_format)
        self.discriminators.to(memory_format=self.memory_format)
        self.generator_ema = (
            AveragedModel(self.generator, multi_avg_fn=get_ema_multi_avg_fn(options.ema_decay), use_buffers=True)
            if options.ema_decay
            else None
        )
        if options.compile:
            # in place (nn.Module.compile), after the EMA copy: parameter names, so checkpoints, stay the eager ones
            for network in (self.generator, self.discriminators.appearance, self.discriminators.pose):
                network.compile()

        self.loss = PoseTransferLoss(self.loss_options, weights_dir)
        self.pose_pool = ImagePool(self.loss_options.pool_size, seed=seed)
        self.appearance_pool = ImagePool(self.loss_options.pool_size, seed=seed + 1)

        self.val_metrics = ValidationMetrics(options.validation_white_padding)
        self.sample_count = sample_count
        self._rng_to_restore: dict[str, Any] | None = None
        self._resumed = False

    # ---- networks -------------------------------------------------------------------------------------
    @property
    def inference_generator(self) -> nn.Module:
        """The generator used for validation and export: the EMA copy when enabled."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def forward(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> Tensor:
        return self.inference_generator(source_image, source_pose, target_pose)

    def load_initial_weights(self, weights: dict[str, Tensor]) -> None:
        """Start from ``weights`` (emca.checkpoint.initial_weights): optimisers, schedule and step start fresh;
        the EMA generator starts as the loaded generator."""
        self.load_state_dict(weights, strict=False)
        if self.generator_ema is not None:
            self.generator_ema.module.load_state_dict(self.generator.state_dict())

    # ---- optimisation ---------------------------------------------------------------------------------
    @property
    def max_optimizer_steps(self) -> int:
        """The trainer's step budget: the schedule's iterations, each stepping G, D_PP and D_PB (Lightning
        counts every optimizer.step() under manual optimisation)."""
        optim = self.optim_options
        return self.optimizer_steps_per_iteration * (optim.constant_iterations + optim.decay_iterations)

    def configure_optimizers(self) -> tuple[list, list]:
        optim = self.optim_options
        networks = (self.generator, self.discriminators.appearance, self.discriminators.pose)
        # Lightning refuses to clip the gradients of a fused optimizer under AMP (it would unscale them itself)
        fused = not self.grad_clip
        optimizers = [adam(net.parameters(), optim.lr, optim.betas, fused) for net in networks]
        schedule = ConstantThenLinearDecay(optim.constant_iterations, optim.decay_iterations)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, schedule) for opt in optimizers]
        return optimizers, schedulers

    def _step(self, optimizer: Any, loss: Tensor, name: str, network: nn.Module) -> None:
        if not torch.isfinite(loss):
            raise self.diverged(f"the loss {name} is not finite (NaN or inf)")
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        # with a 16-bit AMP grad scaler, non-finite gradients are expected: the scaler skips those steps
        if not self._grad_scaled and not gradients_finite(network):
            raise self.diverged(f"a gradient of {name} is not finite (NaN or inf)")
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()

    @property
    def _grad_scaled(self) -> bool:
        return getattr(self.trainer.precision_plugin, "scaler", None) is not None

    def on_after_batch_transfer(self, batch: PoseTransferBatch, dataloader_idx: int) -> PoseTransferBatch:
        return batch.contiguous(self.memory_format)

    def on_train_epoch_start(self) -> None:
        seed_everything(self.hparams.seed + self.current_epoch, workers=True, verbose=False)
        self._rng_to_restore = None  # a new epoch: its seed decides, not the checkpoint's RNG

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._resumed:
            # Lightning adds one to its logging step on restart unless it thinks the checkpoint was written
            # after the count; from an epoch-end last.ckpt it guesses wrong and every CSV row moves one step.
            # The step is the number of trained batches, which its restored progress counts exactly.
            epoch_loop = self.trainer.fit_loop.epoch_loop
            epoch_loop._batches_that_stepped = epoch_loop.batch_progress.total.completed
            self._resumed = False
        # resumed mid-epoch (Lightning then skips on_train_epoch_start): continue the interrupted RNG stream
        if self._rng_to_restore is not None:
            torch.set_rng_state(self._rng_to_restore["torch"])
            if self._rng_to_restore.get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._rng_to_restore["cuda"])
            self._rng_to_restore = None

    def training_step(self, batch: PoseTransferBatch, batch_idx: int) -> None:
        opt_generator, opt_appearance, opt_pose = self.optimizers()
        discriminators = self.discriminators

        # generator step; toggle_optimizer freezes the discriminators so they collect no gradients
        self.toggle_optimizer(opt_generator)
        generated = self.generator(batch.source_image, batch.source_pose, batch.target_pose)
        terms = self.loss.generator_terms(discriminators, generated, batch)
        self._step(opt_generator, terms["loss_generator"], "train/loss_generator", self.generator)
        self.untoggle_optimizer(opt_generator)
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)

        loss_appearance = self.loss.discriminator_loss(
            discriminators.appearance, batch.target_image, generated, batch.source_image, self.appearance_pool
        )
        self._step(opt_appearance, loss_appearance, "train/loss_d_appearance", discriminators.appearance)
        loss_pose = self.loss.discriminator_loss(
            discriminators.pose, batch.target_image, generated, batch.target_pose, self.pose_pool
        )
        self._step(opt_pose, loss_pose, "train/loss_d_pose", discriminators.pose)

        for scheduler in self.lr_schedulers():
            scheduler.step()
        logged = {f"train/{name}": value for name, value in terms.items() if name != "l1"}
        logged |= {"train/loss_d_appearance": loss_appearance, "train/loss_d_pose": loss_pose}
        self.log_dict(logged, batch_size=len(batch))
        self.log("train/l1", terms["l1"], prog_bar=True, batch_size=len(batch))

    # ---- validation -------------------------------------------------------------------------------------
    def validation_step(self, batch: PoseTransferBatch, batch_idx: int) -> Tensor:
        generated = super().validation_step(batch, batch_idx)
        if batch_idx == 0:
            self._write_sample_grid(batch.head(self.sample_count), generated[: self.sample_count])
        return generated

    def _write_sample_grid(self, batch: PoseTransferBatch, generated: Tensor) -> None:
        """Rows of source | source pose | target pose | generated | target, saved as PNG and logged, each row
        enlarged (nearest neighbour) to at least 256 px so that a small model's images can be seen."""
        if not self.trainer.is_global_zero:
            return
        sheet = pose_transfer_sheet(
            batch.source_image, batch.source_keypoints, batch.target_keypoints, generated, batch.target_image
        )
        sheet = enlarged(sheet, unit_height=generated.shape[-2])
        path = Path(self.trainer.default_root_dir) / "samples" / f"iteration_{self.iteration:07d}.png"
        atomic_save_image(sheet, path)
        if hasattr(self.logger, "log_image"):
            self.logger.log_image(key="samples", images=[str(path)], step=self.global_step)

    # ---- exact resumption -------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["image_pools"] = {
            "pose": self.pose_pool.state_dict(),
            "appearance": self.appearance_pool.state_dict(),
        }
        checkpoint["rng_state"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.pose_pool.load_state_dict(checkpoint["image_pools"]["pose"])
        self.appearance_pool.load_state_dict(checkpoint["image_pools"]["appearance"])
        self._rng_to_restore = checkpoint.get("rng_state")
        self._resumed = True
