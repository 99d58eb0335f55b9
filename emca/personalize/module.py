"""The Lightning module that personalises a trained generator to one subject with Mixture-of-Attention.

Built by emca train as ``PersonalizationModule(model=..., data=..., weights_dir=..., seed=...)`` from
``conf/experiment/personalize.yaml``. ``model`` holds ``base_ckpt`` (the trained pose-transfer checkpoint),
``moa`` (token_grid, router_hidden, router_init_prior), ``loss`` (lambda_l1, lambda_perceptual,
lambda_router, lambda_preservation, lambda_gan) and ``optim`` (lr, betas, iterations).

Loss per batch of (source, target) pairs of the subject, M the target's person mask:
  lambda_l1 * masked L1 + lambda_perceptual * VGG L1 of the masked images
  + lambda_router * sum over layers of mean(((1 - M) * (1 - R_prior))^2)
  + lambda_gan * (GAN_PB + GAN_PP) / 2 against the base checkpoint's frozen discriminators
  + lambda_preservation * the router loss with M = 0 on recoloured copies of the batch (other people must
    keep the prior; one extra forward pass per step, skipped when 0).
Only the MoA experts, routers and subject tokens train. At the end of training the adapter is written to
``<run_dir>/adapter.pt``; its checkpoints load with weights_only like every emca checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emca.build import build_discriminators
from emca.checkpoint import load_generator, read_training_checkpoint
from emca.data.batch import PoseTransferBatch
from emca.errors import CheckpointError, ConfigError
from emca.losses import LossOptions, PoseTransferLoss
from emca.metrics.validation import ValidationMetrics
from emca.module import GeneratorModule, adam
from emca.networks.discriminator import DiscriminatorPair
from emca.personalize.adapter import adapter_path_in, architecture_fingerprint, save_adapter
from emca.personalize.moa import PersonalizedGenerator, router_loss, subject_tokens


def masked_l1(generated: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean |generated - target| over the pixels inside ``mask``: (B, C, H, W), (B, C, H, W), (B, 1, H, W)."""
    weight = mask.expand_as(generated)
    return ((generated - target).abs() * weight).sum() / weight.sum().clamp_min(1.0)


def frozen_discriminators(model_cfg: dict[str, Any], base_ckpt: str) -> DiscriminatorPair:
    """D_PB and D_PP of the base checkpoint, frozen."""
    state = read_training_checkpoint(base_ckpt)[0]["state_dict"]
    discriminators = build_discriminators(model_cfg, source=base_ckpt)
    prefix = "discriminators."
    try:
        discriminators.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    except RuntimeError as err:
        raise CheckpointError(
            f"'{base_ckpt}' has no usable discriminator weights for the adversarial loss "
            f"({err}); set model.loss.lambda_gan=0 to personalise without it."
        ) from err
    return discriminators.requires_grad_(False).eval()


def recoloured(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> the same images with their colour channels rotated (RGB -> GBR): someone else in the
    subject's poses, to teach the router that only the subject belongs to the personalised branch."""
    return images.roll(1, dims=1)


class PersonalizationModule(GeneratorModule):
    """MoA personalisation of ``model['base_ckpt']`` (see the module docstring)."""

    optimizer_steps_per_iteration = 1  # the personalised branch and router, in one optimizer

    def __init__(
        self, model: dict[str, Any], data: dict[str, Any] | None = None, weights_dir: str | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        moa, loss_cfg = model["moa"], model["loss"]
        if not model.get("base_ckpt"):
            raise ConfigError(
                "Config field 'ckpt' is empty; pass ckpt=PATH/TO/last.ckpt (the trained pose-transfer model to "
                "personalise)."
            )
        base, self.base_hparams = load_generator(model["base_ckpt"])
        self.fingerprint = architecture_fingerprint(base, self.base_hparams["model"])
        token_count = moa["token_grid"][0] * moa["token_grid"][1]
        channels = base.blocks[0].cross_attention.value.out_channels
        placeholder = torch.zeros(token_count, channels)  # set from the photos in setup()
        self.personalized = PersonalizedGenerator(base, placeholder, moa["router_hidden"], moa["router_init_prior"])
        self.discriminators = (
            frozen_discriminators(self.base_hparams["model"], model["base_ckpt"])
            if loss_cfg["lambda_gan"] > 0
            else None
        )
        # the base model's GAN form; the weights of the terms are personalisation's own (model.loss)
        self.loss = PoseTransferLoss(
            LossOptions(
                gan_mode=self.base_hparams["model"]["loss"]["gan_mode"],
                lambda_perceptual=loss_cfg["lambda_perceptual"],
                lambda_gan=loss_cfg["lambda_gan"],
            ),
            weights_dir,
        )
        self.val_metrics = ValidationMetrics()

    def forward(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> Tensor:
        return self.personalized(source_image, source_pose, target_pose)

    def train(self, mode: bool = True) -> PersonalizationModule:
        super().train(mode)
        if self.discriminators is not None:
            self.discriminators.eval()  # frozen judges: no dropout, no statistics updates
        return self

    def setup(self, stage: str) -> None:
        """Fit the subject data to the base model (frame, pose sigma) and initialise every block's subject tokens
        from the photos (a resumed run then restores them)."""
        if stage != "fit":
            return
        datamodule = self.trainer.datamodule
        datamodule.match_base(self.base_hparams.get("data") or {})
        tokens = subject_tokens(
            self.personalized.generator, datamodule.reference_images(), tuple(self.hparams.model["moa"]["token_grid"])
        )
        for mixture in self.personalized.mixtures:
            mixture.subject_tokens.data.copy_(tokens)

    @property
    def max_optimizer_steps(self) -> int:
        """The trainer's step budget: the iterations, one optimizer step each."""
        return self.optimizer_steps_per_iteration * int(self.hparams.model["optim"]["iterations"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optim = self.hparams.model["optim"]
        trainable = [parameter for parameter in self.personalized.parameters() if parameter.requires_grad]
        return adam(trainable, optim["lr"], tuple(optim["betas"]))

    def training_step(self, batch: PoseTransferBatch, batch_idx: int) -> Tensor:
        loss_cfg = self.hparams.model["loss"]
        source, target, mask = batch.source_image, batch.target_image, batch.target_mask
        batch_size = len(batch)
        poses = batch.source_pose, batch.target_pose
        if loss_cfg["lambda_preservation"] > 0:  # other people: the subject's photos with their colours permuted
            source = torch.cat((source, recoloured(source)))
            poses = tuple(pose.repeat(2, 1, 1, 1) for pose in poses)
        generated = self.personalized(source, *poses)
        prior_weights = self.personalized.prior_weights()
        subject_weights = [layer.unflatten(0, (2, -1))[:, :batch_size].flatten(0, 1) for layer in prior_weights]
        losses = {"router": router_loss(subject_weights, mask)}
        weights = {"router": loss_cfg["lambda_router"]}
        if loss_cfg["lambda_preservation"] > 0:
            other_weights = [layer.unflatten(0, (2, -1))[:, batch_size:].flatten(0, 1) for layer in prior_weights]
            losses["preservation"] = router_loss(other_weights, torch.zeros_like(mask))
            weights["preservation"] = loss_cfg["lambda_preservation"]
            source, generated = source[:batch_size], generated[:batch_size]
        losses["l1"] = masked_l1(generated, target, mask)
        weights["l1"] = loss_cfg["lambda_l1"]
        if self.loss.perceptual is not None:
            losses["perceptual"] = self.loss.perceptual(generated * mask, target * mask)
            weights["perceptual"] = loss_cfg["lambda_perceptual"]
        if self.discriminators is not None:
            adversarial = self.loss.adversarial(self.discriminators, generated, batch)
            losses["gan"] = (adversarial["gan_pose"] + adversarial["gan_appearance"]) / 2
            weights["gan"] = loss_cfg["lambda_gan"]
        total = sum(weights[name] * value for name, value in losses.items())
        self.log_dict({f"train/{name}": value for name, value in losses.items()}, batch_size=batch_size)
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        return total

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            save_adapter(self.adapter_path, self.personalized, self.fingerprint, self.hparams.model["moa"])

    @property
    def adapter_path(self) -> Path:
        return adapter_path_in(self.trainer.default_root_dir)
