"""The Lightning module that personalises a trained generator to one subject with Mixture-of-Attention.

Built by ``emca train experiment=personalize`` as ``PersonalizationModule(model=..., data=..., weights_dir=...,
seed=...)`` from ``conf/experiment/personalize.yaml``. ``model`` holds ``base_ckpt`` (the trained pose-transfer
model, from ``ckpt=``) and three option groups, parsed here before anything is loaded: ``moa``
(:class:`~emca.personalize.moa.MoAOptions`), ``loss`` (:class:`~emca.personalize.loss.MoALossOptions`, the
objective of :class:`~emca.personalize.loss.MixtureOfAttentionLoss`) and ``optim``
(:class:`PersonalizationOptimOptions`). Only the MoA experts, routers and subject tokens train. At the end of
training the adapter is written to ``<run_dir>/adapter.pt``; its checkpoints load with weights_only like every
emca checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emca.build import build_discriminators
from emca.checkpoint import load_generator, read_training_checkpoint
from emca.data.batch import PoseTransferBatch
from emca.errors import CheckpointError
from emca.metrics.validation import ValidationMetrics
from emca.module import GeneratorModule, adam, gradients_finite
from emca.networks.discriminator import DiscriminatorPair
from emca.options import bounded, complete, parse
from emca.personalize.adapter import adapter_path_in, architecture_fingerprint, save_adapter
from emca.personalize.loss import MixtureOfAttentionLoss, MoALossOptions
from emca.personalize.moa import MoAOptions, PersonalizedGenerator, subject_tokens


@dataclass(frozen=True)
class PersonalizationOptimOptions:
    """``model.optim`` of ``experiment=personalize``: Adam on the personalised branch, routers and tokens."""

    lr: float = bounded(1.0e-3, exclusive_minimum=0)
    betas: tuple[float, ...] = bounded((0.9, 0.999), minimum=0, exclusive_maximum=1, length=2)
    iterations: int = bounded(600, minimum=1)  # a run of 0 iterations would write an untrained adapter


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


class PersonalizationModule(GeneratorModule):
    """MoA personalisation of ``model['base_ckpt']`` (see the module docstring)."""

    optimizer_steps_per_iteration = 1  # the personalised branch and router, in one optimizer
    builds_on_ckpt = True  # its model is ckpt, frozen, with the personalised branch beside it

    def __init__(
        self, model: dict[str, Any], data: dict[str, Any] | None = None, weights_dir: str | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        assert model.get("base_ckpt"), "emca train checks that ckpt is given"
        # typed views of the options emca train checked where it started (before the base model is read)
        self.moa_options = parse(MoAOptions, model.get("moa"), "model.moa")
        loss_options = parse(MoALossOptions, model.get("loss"), "model.loss")
        self.optim_options = parse(PersonalizationOptimOptions, model.get("optim"), "model.optim")
        base, self.base_hparams = load_generator(model["base_ckpt"])
        self.fingerprint = architecture_fingerprint(base, self.base_hparams["model"])
        moa = self.moa_options
        channels = base.blocks[0].cross_attention.value.out_channels
        placeholder = torch.zeros(math.prod(moa.token_grid), channels)  # set from the photos in setup()
        self.personalized = PersonalizedGenerator(base, placeholder, moa.router_hidden, moa.router_init_prior)
        self.discriminators = (
            frozen_discriminators(self.base_hparams["model"], model["base_ckpt"])
            if loss_options.lambda_gan > 0
            else None
        )
        # the base model's GAN form; the weights of the terms are personalisation's own (model.loss)
        self.loss = MixtureOfAttentionLoss(loss_options, self.base_hparams["model"]["loss"]["gan_mode"], weights_dir)
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
        tokens = subject_tokens(self.personalized.generator, datamodule.reference_images(), self.moa_options.token_grid)
        for mixture in self.personalized.mixtures:
            mixture.subject_tokens.data.copy_(tokens)

    @property
    def max_optimizer_steps(self) -> int:
        """The trainer's step budget: the iterations, one optimizer step each."""
        return self.optimizer_steps_per_iteration * self.optim_options.iterations

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optim = self.optim_options
        trainable = [parameter for parameter in self.personalized.parameters() if parameter.requires_grad]
        return adam(trainable, optim.lr, optim.betas)

    def training_step(self, batch: PoseTransferBatch, batch_idx: int) -> Tensor:
        total, losses = self.loss(self.personalized, batch, self.discriminators)
        if not torch.isfinite(total):
            raise self.diverged("the loss is not finite (NaN or inf)")
        self.log_dict({f"train/{name}": value for name, value in losses.items()}, batch_size=len(batch))
        self.log("train/loss", total, prog_bar=True, batch_size=len(batch))
        return total

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not gradients_finite(self.personalized):
            raise self.diverged("a gradient is not finite (NaN or inf)")

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            save_adapter(self.adapter_path, self.personalized, self.fingerprint, complete(self.moa_options))

    @property
    def adapter_path(self) -> Path:
        return adapter_path_in(self.trainer.default_root_dir)
