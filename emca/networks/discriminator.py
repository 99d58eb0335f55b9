"""The XingGAN discriminators: a ResNet trunk whose 256-channel map is the patch prediction.

Two conditional copies, as released:
- D_PB (shape consistency) sees cat(image, target_pose): :func:`shape_discriminator`;
- D_PP (appearance consistency) sees cat(image, source_image): :func:`appearance_discriminator`.

The official code appends a sigmoid for the vanilla GAN and uses BCELoss; here the map stays raw
(logits) and :class:`emca.losses.GANLoss` applies BCE-with-logits, the same loss computed stably. The
official code also leaves the discriminators at torch's default initialisation (only the generator
gets N(0, 0.02)); so do we.
"""

from __future__ import annotations

from torch import Tensor, nn

from emca.errors import ConfigError
from emca.networks.blocks import ResidualBlock, downsampling_encoder


class ResnetDiscriminator(nn.Module):
    """Encoder (conv7x7 -> ndf, two stride-2 convs -> 4 ndf) and ``num_blocks`` residual blocks.

    forward(pair (B, input_channels, H, W)) -> prediction map (B, 4 ndf, H/4, W/4), unbounded.
    """

    def __init__(
        self,
        input_channels: int,
        ndf: int = 64,
        num_blocks: int = 3,
        norm: str = "instance",
        dropout: float = 0.5,
        padding_type: str = "reflect",
    ) -> None:
        super().__init__()
        self.input_channels = input_channels
        self.model = nn.Sequential(
            downsampling_encoder(input_channels, ndf, norm, num_downsampling=2),
            *(ResidualBlock(ndf * 4, norm, dropout, padding_type) for _ in range(num_blocks)),
        )

    def forward(self, pair: Tensor) -> Tensor:
        if pair.dim() != 4 or pair.shape[1] != self.input_channels:
            raise ConfigError(
                f"ResnetDiscriminator input has shape {tuple(pair.shape)}; expected (B, {self.input_channels}, H, W), "
                f"the image concatenated with its condition on the channel axis."
            )
        return self.model(pair)


def shape_discriminator(image_channels: int = 3, pose_channels: int = 18, **options) -> ResnetDiscriminator:
    """D_PB: judges cat(image, target_pose), (B, image_channels + pose_channels, H, W).
    ``options`` are ResnetDiscriminator's ndf, num_blocks, norm, dropout, padding_type."""
    return ResnetDiscriminator(image_channels + pose_channels, **options)


def appearance_discriminator(image_channels: int = 3, **options) -> ResnetDiscriminator:
    """D_PP: judges cat(image, source_image), (B, 2 * image_channels, H, W)."""
    return ResnetDiscriminator(2 * image_channels, **options)
