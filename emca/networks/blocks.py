"""Layer builders shared by the XingGAN generator and discriminators (pix2pix / PATN conventions).

Norms follow the official code: ``instance`` is InstanceNorm2d without affine parameters and then the
convolutions carry a bias; ``batch`` is BatchNorm2d with affine parameters and the convolutions have
no bias (the norm's shift replaces it).
"""

from __future__ import annotations

from itertools import pairwise

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn import init

NORMS = ("instance", "batch")
PADDINGS = ("reflect", "replicate", "zero")
# transposed: the official stride-2 transposed 3x3 convolutions; resize: nearest x2 then a reflect-padded 3x3
# convolution, which cannot make the transposed convolution's checkerboard (its uneven kernel overlap)
UPSAMPLINGS = ("transposed", "resize")


def check_choice(value: str, choices: tuple[str, ...]) -> None:
    """Options are checked where a command starts (emca.build); here a wrong one is a programming error."""
    assert value in choices, (value, choices)


def norm_layer(norm: str, channels: int) -> nn.Module:
    """Normalisation over ``channels`` feature maps: (B, channels, H, W) -> same shape."""
    check_choice(norm, NORMS)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    return nn.BatchNorm2d(channels, affine=True)


def uses_bias(norm: str) -> bool:
    """Whether convolutions followed by ``norm`` carry a bias (only with the affine-free instance norm)."""
    check_choice(norm, NORMS)
    return norm == "instance"


def padded_conv3x3(in_channels: int, out_channels: int, padding_type: str, bias: bool) -> list[nn.Module]:
    """A size-preserving 3x3 convolution: explicit reflect / replicate padding, or zero padding inside."""
    check_choice(padding_type, PADDINGS)
    if padding_type == "zero":
        return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)]
    pad = nn.ReflectionPad2d(1) if padding_type == "reflect" else nn.ReplicationPad2d(1)
    return [pad, nn.Conv2d(in_channels, out_channels, 3, bias=bias)]


def conv_block(
    in_channels: int, out_channels: int, norm: str, dropout: float, padding_type: str, final_norm: bool
) -> nn.Sequential:
    """pad, conv3x3 in->in, norm, ReLU, [dropout], pad, conv3x3 in->out, [norm].

    (B, in_channels, H, W) -> (B, out_channels, H, W). The residual blocks of the discriminator, and the
    appearance (final norm) and shape (no final norm) branches of a Xing block, are all this block.
    """
    bias = uses_bias(norm)
    layers = [
        *padded_conv3x3(in_channels, in_channels, padding_type, bias),
        norm_layer(norm, in_channels),
        nn.ReLU(True),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers += padded_conv3x3(in_channels, out_channels, padding_type, bias)
    if final_norm:
        layers.append(norm_layer(norm, out_channels))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """x + conv_block(x) with a final norm: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, norm: str, dropout: float, padding_type: str) -> None:
        super().__init__()
        self.body = conv_block(channels, channels, norm, dropout, padding_type, final_norm=True)

    def forward(self, features: Tensor) -> Tensor:
        return features + self.body(features)


def downsampling_encoder(in_channels: int, base_channels: int, norm: str, num_downsampling: int = 2) -> nn.Sequential:
    """reflect-pad 3, conv7x7 -> base, norm, ReLU, then stride-2 conv3x3 doubling the channels each time.

    (B, in_channels, H, W) -> (B, base_channels * 2**num_downsampling, H / 2**n, W / 2**n).
    """
    bias = uses_bias(norm)
    layers = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(in_channels, base_channels, 7, bias=bias),
        norm_layer(norm, base_channels),
        nn.ReLU(True),
    ]
    channels = base_channels
    for _ in range(num_downsampling):
        layers += [
            nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1, bias=bias),
            norm_layer(norm, channels * 2),
            nn.ReLU(True),
        ]
        channels *= 2
    return nn.Sequential(*layers)


class PointwiseConvTranspose2d(nn.ConvTranspose2d):
    """The released 1x1 transposed convolution, computed as the 1x1 convolution it equals (the weight's two
    channel axes swapped): (B, in_channels, H, W) -> (B, out_channels, H, W).

    Parameters and state-dict keys are those of ``nn.ConvTranspose2d(in_channels, out_channels, 1)``, so released
    weights load unchanged. Why: on CPU, torch's transposed-convolution path adds the bias in a slow loop. At
    (32, 32, 32, 24) -> 21 channels in bfloat16 it took about 20x the time of the equal convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, features: Tensor) -> Tensor:
        return F.conv2d(features, self.weight.transpose(0, 1), self.bias)


def upsampling_layers(channels: list[int], norm: str, upsampling: str = "transposed") -> list[nn.Module]:
    """A x2 upsampling convolution (``upsampling``, one of UPSAMPLINGS), norm, ReLU for each step
    channels[i] -> channels[i + 1].

    (B, channels[0], h, w) -> (B, channels[-1], h * 2**steps, w * 2**steps).
    """
    check_choice(upsampling, UPSAMPLINGS)
    bias = uses_bias(norm)
    layers: list[nn.Module] = []
    for in_channels, out_channels in pairwise(channels):
        if upsampling == "transposed":
            layers.append(
                nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=bias)
            )
        else:
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                *padded_conv3x3(in_channels, out_channels, "reflect", bias),
            ]
        layers += [norm_layer(norm, out_channels), nn.ReLU(True)]
    return layers


def init_normal_(module: nn.Module, std: float = 0.02) -> None:
    """The official ``weights_init_normal``: conv / transposed-conv weights ~ N(0, std), batch-norm
    weights ~ N(1, std) and shifts 0; conv biases keep torch's default initialisation."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            init.normal_(layer.weight, 0.0, std)
        elif isinstance(layer, nn.BatchNorm2d):
            init.normal_(layer.weight, 1.0, std)
            init.zeros_(layer.bias)
