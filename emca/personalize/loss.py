"""The personalisation objective, beside :class:`~emca.losses.PoseTransferLoss` (which it reuses for the
perceptual and adversarial terms).

For a batch of (source, target) pairs of the subject, M the target's person mask and R_prior each block's
prior routing weight:

    lambda_l1 * L1 inside M + lambda_perceptual * VGG L1 of the masked images
    + lambda_router * sum over blocks of mean(((1 - M) * (1 - R_prior))^2)
    + lambda_gan * (GAN_PB + GAN_PP) / 2 against the base model's frozen discriminators
    + lambda_preservation * the router term with M = 0 on recoloured copies of the batch

The recoloured copies stand for other people in the subject's poses: their routing must stay on the prior,
so the personalised branch learns the subject only. They cost one more forward pass, skipped at weight 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from emca.data.batch import PoseTransferBatch
from emca.losses import LossOptions, PoseTransferLoss
from emca.networks.discriminator import DiscriminatorPair
from emca.options import bounded
from emca.personalize.moa import PersonalizedGenerator, router_loss


@dataclass(frozen=True)
class MoALossOptions:
    """``model.loss`` of ``experiment=personalize``: the weights of the terms above."""

    lambda_l1: float = bounded(1.0, minimum=0)
    lambda_perceptual: float = bounded(0.0, minimum=0)  # 0: no VGG19 loss, no weights needed
    lambda_router: float = bounded(0.1, minimum=0)
    lambda_preservation: float = bounded(0.1, minimum=0)
    lambda_gan: float = bounded(0.0, minimum=0)  # > 0 needs the base checkpoint's discriminators


def masked_l1(generated: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean |generated - target| over the pixels inside ``mask``: (B, C, H, W), (B, C, H, W), (B, 1, H, W)."""
    weight = mask.expand_as(generated)
    return ((generated - target).abs() * weight).sum() / weight.sum().clamp_min(1.0)


def recoloured(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> the same images with their colour channels rotated (RGB -> GBR): someone else in the
    subject's poses."""
    return images.roll(1, dims=1)


class MixtureOfAttentionLoss(nn.Module):
    """The objective above. ``gan_mode`` is the base model's GAN form; ``weights_dir`` where the VGG19 weights
    are looked for (only when ``lambda_perceptual > 0``).

    forward(personalized, batch, discriminators or None) -> (total, {term name: unweighted value})
    """

    def __init__(self, options: MoALossOptions, gan_mode: str, weights_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.options = options
        self.pose_transfer = PoseTransferLoss(
            LossOptions(gan_mode=gan_mode, lambda_perceptual=options.lambda_perceptual, lambda_gan=options.lambda_gan),
            weights_dir,
        )

    def forward(
        self, personalized: PersonalizedGenerator, batch: PoseTransferBatch, discriminators: DiscriminatorPair | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        options = self.options
        source, target, mask = batch.source_image, batch.target_image, batch.target_mask
        batch_size = len(batch)
        poses = batch.source_pose, batch.target_pose
        if options.lambda_preservation > 0:  # the subject's pairs, then their recoloured copies, in one pass
            source = torch.cat((source, recoloured(source)))
            poses = tuple(pose.repeat(2, 1, 1, 1) for pose in poses)
        generated = personalized(source, *poses)
        prior_weights = personalized.prior_weights()  # per block (2 directions x batch, h, w)
        subject = [layer.unflatten(0, (2, -1))[:, :batch_size].flatten(0, 1) for layer in prior_weights]
        losses = {"router": router_loss(subject, mask)}
        weights = {"router": options.lambda_router}
        if options.lambda_preservation > 0:
            others = [layer.unflatten(0, (2, -1))[:, batch_size:].flatten(0, 1) for layer in prior_weights]
            losses["preservation"] = router_loss(others, torch.zeros_like(mask))
            weights["preservation"] = options.lambda_preservation
            generated = generated[:batch_size]
        losses["l1"] = masked_l1(generated, target, mask)
        weights["l1"] = options.lambda_l1
        if self.pose_transfer.perceptual is not None:
            losses["perceptual"] = self.pose_transfer.perceptual(generated * mask, target * mask)
            weights["perceptual"] = options.lambda_perceptual
        if discriminators is not None:
            adversarial = self.pose_transfer.adversarial(discriminators, generated, batch)
            losses["gan"] = (adversarial["gan_pose"] + adversarial["gan_appearance"]) / 2
            weights["gan"] = options.lambda_gan
        total = sum(weights[name] * value for name, value in losses.items())
        return total, losses
