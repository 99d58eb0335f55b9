"""XingGAN training losses, as released: :class:`PoseTransferLoss` is the whole objective.

Generator: lambda_A * L1(fake, P2) + lambda_B * L1 between VGG19 relu1_2 features (ImageNet-normalised)
+ lambda_GAN * (GAN_PB + GAN_PP) / 2. Each discriminator: 0.5 * lambda_GAN * (real + fake). The fake
images a discriminator sees may come from an :class:`ImagePool`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from emca.data.batch import PoseTransferBatch
from emca.errors import CheckpointError, WeightsError
from emca.networks.discriminator import DiscriminatorPair
from emca.options import bounded
from emca.weights import WEIGHT_FILES, load_state_dict

PERCEPTUAL_DISABLE_HINT = "To train without the perceptual loss, set model.loss.lambda_perceptual=0."
RELU1_2 = 4  # vgg19.features[:4] = conv1_1, relu1_1, conv1_2, relu1_2 (official perceptual_layers=3)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GAN_MODES = ("lsgan", "vanilla")


def load_vgg19_features(num_layers: int, weights_dir: str | os.PathLike | None = None) -> nn.Sequential:
    """torchvision's VGG19 with the ImageNet weights file, cut to ``features[:num_layers]``.

    The weights come from :func:`emca.weights.load_state_dict` (never downloaded); a missing or wrong
    file raises WeightsError saying how to get it or how to train without the loss.
    """
    state = load_state_dict("vgg19", weights_dir, disable_hint=PERCEPTUAL_DISABLE_HINT)
    with torch.device("meta"):  # skip initialising 143 M parameters that the file replaces anyway
        vgg = torchvision.models.vgg19(weights=None)
    try:
        vgg.load_state_dict(state, assign=True)
    except RuntimeError as err:
        raise WeightsError(
            f"The file '{WEIGHT_FILES['vgg19'].filename}' is not torchvision's VGG19 state dict ({err}). "
            f"Download it again from {WEIGHT_FILES['vgg19'].url}. {PERCEPTUAL_DISABLE_HINT}"
        ) from err
    return vgg.features[:num_layers]


def freeze_as_buffers(module: nn.Module) -> None:
    """Turn every parameter of ``module`` into a non-persistent buffer: it still follows .to(device),
    but optimizers never see it and state_dict() (hence every checkpoint) leaves it out."""
    for layer in module.modules():
        for name, parameter in list(layer.named_parameters(recurse=False)):
            delattr(layer, name)
            layer.register_buffer(name, parameter.detach(), persistent=False)


class PerceptualLoss(nn.Module):
    """L1 distance between VGG19 relu1_2 features of two images.

    forward(generated (B, 3, H, W), target (B, 3, H, W), both in [-1, 1]) -> scalar. Inputs are mapped
    to [0, 1] and ImageNet-normalised; the target's features carry no gradient. The VGG is frozen,
    always in eval mode, and not part of parameters() or state_dict().
    """

    def __init__(self, weights_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.features = load_vgg19_features(RELU1_2, weights_dir)
        freeze_as_buffers(self.features)
        self.features.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()
        return self

    def normalise(self, image: Tensor) -> Tensor:
        """[-1, 1] -> ImageNet-normalised: (B, 3, H, W) -> (B, 3, H, W)."""
        return ((image + 1) / 2 - self.mean) / self.std

    def forward(self, generated: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            target_features = self.features(self.normalise(target))
        return F.l1_loss(self.features(self.normalise(generated)), target_features)


@dataclass(frozen=True)
class LossOptions:
    """``model.loss``: the objective's weights and GAN form (the official values are DeepFashion's)."""

    gan_mode: str = bounded("lsgan", choices=GAN_MODES)  # lsgan (MSE) | vanilla (BCE)
    lambda_l1: float = bounded(50.0, minimum=0)
    lambda_perceptual: float = bounded(1.0, minimum=0)  # 0: no VGG19 loss, no weights needed
    lambda_gan: float = bounded(5.0, minimum=0)
    pool_size: int = bounded(0, minimum=0)  # image pool of generated images shown to the discriminators


class GANLoss(nn.Module):
    """Adversarial loss against a constant label map.

    ``lsgan``: MSE(prediction, label) (DeepFashion). ``vanilla``: BCE on logits (Market-1501); the
    official discriminator ends in a sigmoid followed by BCELoss, which is the same loss.
    forward(prediction (B, ...), target_is_real) -> scalar.
    """

    def __init__(self, mode: str = "lsgan", real_label: float = 1.0, fake_label: float = 0.0) -> None:
        super().__init__()
        assert mode in GAN_MODES, mode
        self.mode = mode
        self.real_label = real_label
        self.fake_label = fake_label

    def forward(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        target = torch.full_like(prediction, self.real_label if target_is_real else self.fake_label)
        if self.mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)


class PoseTransferLoss(nn.Module):
    """XingGAN's objective, used by training (emca.module) and personalisation (emca.personalize.module).

    Generator: lambda_l1 * L1(generated, target) + lambda_perceptual * perceptual
    + lambda_gan * (GAN_pose + GAN_appearance) / 2, the GAN terms being each discriminator's loss on the
    generated image judged real. Each discriminator: 0.5 * lambda_gan * (real + fake); the official code
    weights the discriminators' loss by lambda_GAN too. The VGG19 perceptual loss is only built (and its
    weights only needed) when lambda_perceptual > 0.
    """

    def __init__(self, options: LossOptions, weights_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.options = options
        self.gan = GANLoss(options.gan_mode)
        self.perceptual = PerceptualLoss(weights_dir) if options.lambda_perceptual > 0 else None

    def adversarial(
        self, discriminators: DiscriminatorPair, generated: Tensor, batch: PoseTransferBatch
    ) -> dict[str, Tensor]:
        """The generator's GAN terms: each discriminator's loss on ``generated`` (B, 3, H, W) judged real."""
        return {
            "gan_pose": self.gan(discriminators.pose(generated, batch.target_pose), True),
            "gan_appearance": self.gan(discriminators.appearance(generated, batch.source_image), True),
        }

    def generator_terms(
        self, discriminators: DiscriminatorPair, generated: Tensor, batch: PoseTransferBatch
    ) -> dict[str, Tensor]:
        """Every term of the generator's loss and their weighted sum, ``loss_generator``."""
        options = self.options
        terms = {"l1": F.l1_loss(generated, batch.target_image), **self.adversarial(discriminators, generated, batch)}
        total = options.lambda_l1 * terms["l1"] + options.lambda_gan * (terms["gan_pose"] + terms["gan_appearance"]) / 2
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(generated, batch.target_image)
            total = total + options.lambda_perceptual * terms["perceptual"]
        return {**terms, "loss_generator": total}

    def discriminator_loss(
        self,
        discriminator: nn.Module,
        real_image: Tensor,
        generated: Tensor,
        condition: Tensor,
        pool: ImagePool | None = None,
    ) -> Tensor:
        """One discriminator's loss on (real_image, condition) against (generated, condition); the fake
        pair may be exchanged for an older one from ``pool``. Images (B, 3, H, W), condition (B, C, H, W)."""
        fake_pair = torch.cat((generated.detach(), condition), 1)
        if pool is not None:
            fake_pair = pool.query(fake_pair)
        fake_image, fake_condition = fake_pair.split((generated.shape[1], condition.shape[1]), 1)
        loss_real = self.gan(discriminator(real_image, condition), True)
        loss_fake = self.gan(discriminator(fake_image, fake_condition), False)
        return 0.5 * self.options.lambda_gan * (loss_real + loss_fake)


class ImagePool:
    """History of generated images for the discriminator (Shrivastava et al., as in pix2pix / CycleGAN).

    query(images (B, ...)) -> (B, ...): while the pool is not full each image is stored and returned;
    afterwards, with probability 1/2, a random stored image is returned and replaced by the new one,
    otherwise the new image is returned. ``size`` 0 returns the input unchanged. The random choices come
    from the pool's own torch.Generator, saved with the images by state_dict() so that a resumed run
    draws exactly as an uninterrupted one.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        assert size >= 0, size
        self.size = size
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: Tensor) -> Tensor:
        if self.size == 0:
            return images
        returned = []
        for image in images.detach():
            # stored images are copies, so the pool never keeps a whole batch's storage alive
            if len(self.images) < self.size:
                self.images.append(image.clone())
                returned.append(image)
            elif torch.rand(1, generator=self.generator).item() > 0.5:
                index = int(torch.randint(self.size, (1,), generator=self.generator))
                returned.append(self.images[index].to(image.device))
                self.images[index] = image.clone()
            else:
                returned.append(image)
        return torch.stack(returned)

    def state_dict(self) -> dict[str, int | Tensor]:
        """{'size': int, 'images': (K, ...) CPU tensor (K <= size, empty (0,) if K = 0),
        'generator': the RNG state (uint8 tensor)}."""
        images = torch.stack([image.cpu() for image in self.images]) if self.images else torch.empty(0)
        return {"size": self.size, "images": images, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, int | Tensor]) -> None:
        if state["size"] != self.size:
            raise CheckpointError(
                f"The checkpoint's image pool holds up to {state['size']} images but the config sets "
                f"pool_size={self.size}; resume with the pool size the run was started with."
            )
        self.images = list(state["images"].unbind(0)) if state["images"].numel() else []
        self.generator.set_state(state["generator"].cpu())
