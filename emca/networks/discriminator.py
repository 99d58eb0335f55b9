"""The XingGAN discriminators: conditional ResNet judges whose 256-channel map is the patch prediction.

Two conditional copies, as released, called as ``D(image, condition)``:
- D_PB, the *pose* discriminator, judges shape consistency: the image with the target pose (18 heatmaps);
- D_PP, the *appearance* discriminator, judges appearance consistency: the image with the source image.
:class:`DiscriminatorPair` holds both (emca.build.build_discriminators makes it from a config).

The official code appends a sigmoid for the vanilla GAN and uses BCELoss; here the map stays raw
(logits) and :class:`emca.losses.GANLoss` applies BCE-with-logits, the same loss computed stably. The
official code also leaves the discriminators at torch's default initialisation (only the generator
gets N(0, 0.02)); so do we.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emca.errors import InputShapeError
from emca.networks.blocks import ResidualBlock, downsampling_encoder


class ResnetDiscriminator(nn.Module):
    """Encoder (conv7x7 -> ndf, two stride-2 convs -> 4 ndf) and ``num_blocks`` residual blocks over
    cat(image, condition).

    forward(image (B, image_channels, H, W), condition (B, condition_channels, H, W))
    -> prediction map (B, 4 ndf, H/4, W/4), unbounded.
    """

    def __init__(
        self,
        condition_channels: int,
        image_channels: int = 3,
        ndf: int = 64,
        num_blocks: int = 3,
        norm: str = "instance",
        dropout: float = 0.5,
        padding_type: str = "reflect",
    ) -> None:
        super().__init__()
        self.image_channels = image_channels
        self.condition_channels = condition_channels
        self.model = nn.Sequential(
            downsampling_encoder(image_channels + condition_channels, ndf, norm, num_downsampling=2),
            *(ResidualBlock(ndf * 4, norm, dropout, padding_type) for _ in range(num_blocks)),
        )

    def forward(self, image: Tensor, condition: Tensor) -> Tensor:
        for name, tensor, channels in (
            ("image", image, self.image_channels),
            ("condition", condition, self.condition_channels),
        ):
            if tensor.dim() != 4 or tensor.shape[1] != channels or tensor.shape[0] != image.shape[0]:
                raise InputShapeError(
                    f"ResnetDiscriminator input '{name}' has shape {tuple(tensor.shape)}; expected (B, {channels}, "
                    f"H, W) with the batch size of the image {tuple(image.shape)}."
                )
        return self.model(torch.cat((image, condition), 1))


class DiscriminatorPair(nn.Module):
    """D_PB (``pose``: image | target pose) and D_PP (``appearance``: image | source image)."""

    def __init__(self, pose: nn.Module, appearance: nn.Module) -> None:
        super().__init__()
        self.pose = pose
        self.appearance = appearance
