"""XingGAN training losses, as released.

Generator: lambda_A * L1(fake, P2) + lambda_B * L1 between VGG19 relu1_2 features (ImageNet-normalised)
+ lambda_GAN * (GAN_PB + GAN_PP) / 2, see :func:`generator_loss` (L1 itself is
``torch.nn.functional.l1_loss``). Each discriminator: 0.5 * lambda_GAN * (real + fake), see
:func:`discriminator_loss`. The fake images a discriminator sees may come from an :class:`ImagePool`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from emca.errors import CheckpointError, ConfigError, WeightsError
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
        if mode not in GAN_MODES:
            raise ConfigError(f"Config field 'gan_mode' is '{mode}'; expected one of {list(GAN_MODES)}.")
        self.mode = mode
        self.real_label = real_label
        self.fake_label = fake_label

    def forward(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        target = torch.full_like(prediction, self.real_label if target_is_real else self.fake_label)
        if self.mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)


def generator_loss(
    l1: Tensor,
    perceptual: Tensor | None,
    gan_shape: Tensor,
    gan_appearance: Tensor,
    lambda_l1: float,
    lambda_perceptual: float,
    lambda_gan: float,
) -> Tensor:
    """lambda_l1 * l1 + lambda_perceptual * perceptual + lambda_gan * (gan_shape + gan_appearance) / 2.

    ``gan_shape`` is D_PB's loss on the fake, ``gan_appearance`` D_PP's; ``perceptual`` may be None only
    when lambda_perceptual is 0 (no VGG loaded).
    """
    total = lambda_l1 * l1 + lambda_gan * (gan_shape + gan_appearance) / 2
    if perceptual is not None:
        return total + lambda_perceptual * perceptual
    if lambda_perceptual != 0:
        raise ValueError(f"lambda_perceptual is {lambda_perceptual} but no perceptual loss was given")
    return total


def discriminator_loss(loss_real: Tensor, loss_fake: Tensor, lambda_gan: float) -> Tensor:
    """0.5 * lambda_gan * (loss_real + loss_fake); the official code weights the discriminators' loss
    by lambda_GAN too."""
    return 0.5 * lambda_gan * (loss_real + loss_fake)


class ImagePool:
    """History of generated images for the discriminator (Shrivastava et al., as in pix2pix / CycleGAN).

    query(images (B, ...)) -> (B, ...): while the pool is not full each image is stored and returned;
    afterwards, with probability 1/2, a random stored image is returned and replaced by the new one,
    otherwise the new image is returned. ``size`` 0 returns the input unchanged. The random choices come
    from the pool's own torch.Generator, saved with the images by state_dict() so that a resumed run
    draws exactly as an uninterrupted one.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 0:
            raise ConfigError(f"Config field 'pool_size' is {size}; expected 0 (no pool) or a positive size.")
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
