"""The XingGAN generator (Tang et al., ECCV 2020), laid out as the official release.

Two encoders (appearance on the source image, shape on both pose maps), a chain of Xing blocks that
exchange information by shape-guided appearance (SA) and appearance-guided shape (AS) cross-attention,
and a co-attention fusion head that blends 20 generated candidates and the source image with 21
softmax masks. With ngf 64, 9 blocks and instance norm it has 44.84 M parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from emca.errors import InputShapeError
from emca.networks.attention import ReferenceAttention
from emca.networks.blocks import (
    PointwiseConvTranspose2d,
    conv_block,
    downsampling_encoder,
    init_normal_,
    norm_layer,
    upsampling_layers,
    uses_bias,
)
from emca.networks.cross_attention import XingAttention

NUM_DOWNSAMPLING = 2  # features at 1/4 resolution, as released


class XingBlock(nn.Module):
    """One Xing block: appearance and shape conv branches, then the SA / AS cross-attention step.

    forward(appearance (B, C, h, w), shape (B, C_s, h, w)) -> (appearance' (B, C, h, w),
    cat(appearance', shape') (B, 2C, h, w)), with C = ``channels`` and C_s = ``shape_in_channels``
    (C for the first block, 2C afterwards). ``make_attention()`` builds the attention step
    ``cross_attention`` (emca.networks.cross_attention.XingAttention, or XingGAN++'s multi-scale one)
    after the conv branches, so parameters are made (and drawn from the RNG) in the official order.
    """

    def __init__(
        self,
        shape_in_channels: int,
        channels: int,
        norm: str,
        dropout: float,
        padding_type: str,
        make_attention: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        self.appearance_conv = conv_block(channels, channels, norm, dropout, padding_type, final_norm=True)
        self.shape_conv = conv_block(shape_in_channels, channels, norm, dropout, padding_type, final_norm=False)
        self.cross_attention = make_attention()

    def forward(self, appearance: Tensor, shape: Tensor) -> tuple[Tensor, Tensor]:
        appearance, shape = self.cross_attention(self.appearance_conv(appearance), self.shape_conv(shape))
        return appearance, torch.cat((appearance, shape), 1)


def candidate_decoder(
    in_channels: int, ngf: int, norm: str, image_channels: int, num_candidates: int, upsampling: str
) -> nn.Sequential:
    """Two x2 upsamplings then conv7x7 and tanh:
    (B, in_channels, h, w) -> (B, num_candidates * image_channels, 4h, 4w) in [-1, 1]."""
    return nn.Sequential(
        *upsampling_layers([in_channels, ngf * 2, ngf], norm, upsampling),
        nn.ReflectionPad2d(3),
        nn.Conv2d(ngf, num_candidates * image_channels, 7),
        nn.Tanh(),
    )


class CoAttentionFusion(nn.Module):
    """The co-attention fusion head.

    Appearance features give ``candidates_per_branch`` candidate images, shape features (reduced by a
    1x1 transposed conv) as many more, and cat(appearance, shape) gives 2k + 1 softmax masks; the output
    is the mask-weighted sum of the candidates and the source image (the last mask), a per-pixel convex
    blend. ``upsampling`` picks the decoders' x2 steps (emca.networks.blocks.UPSAMPLINGS).
    """

    def __init__(
        self,
        appearance_channels: int,
        shape_channels: int,
        ngf: int,
        norm: str,
        image_channels: int = 3,
        candidates_per_branch: int = 10,
        upsampling: str = "transposed",
    ) -> None:
        super().__init__()
        self.image_channels = image_channels
        self.appearance_decoder = candidate_decoder(
            appearance_channels, ngf, norm, image_channels, candidates_per_branch, upsampling
        )
        self.shape_reduce = nn.Sequential(
            PointwiseConvTranspose2d(shape_channels, appearance_channels, bias=uses_bias(norm)),
            norm_layer(norm, appearance_channels),
            nn.ReLU(True),
        )
        self.shape_decoder = candidate_decoder(
            appearance_channels, ngf, norm, image_channels, candidates_per_branch, upsampling
        )
        self.mask_decoder = nn.Sequential(
            *upsampling_layers([appearance_channels + shape_channels, ngf * 4, ngf * 2], norm, upsampling),
            PointwiseConvTranspose2d(ngf * 2, 2 * candidates_per_branch + 1, bias=uses_bias(norm)),
        )

    def candidates_and_masks(self, appearance: Tensor, shape: Tensor, source_image: Tensor) -> tuple[Tensor, Tensor]:
        """appearance (B, Ca, h, w), shape (B, Cs, h, w), source_image (B, 3, 4h, 4w) ->
        candidates (B, 2k+1, 3, 4h, 4w) (appearance ones, shape ones, then the source) and
        masks (B, 2k+1, 1, 4h, 4w) summing to 1 over dim 1."""
        batch, _, height, width = source_image.shape
        candidates = torch.cat(
            (self.appearance_decoder(appearance), self.shape_decoder(self.shape_reduce(shape)), source_image), 1
        )
        candidates = candidates.reshape(batch, -1, self.image_channels, height, width)
        masks = torch.softmax(self.mask_decoder(torch.cat((appearance, shape), 1)), dim=1).unsqueeze(2)
        return candidates, masks

    def forward(self, appearance: Tensor, shape: Tensor, source_image: Tensor) -> Tensor:
        """-> the generated image (B, 3, 4h, 4w)."""
        candidates, masks = self.candidates_and_masks(appearance, shape, source_image)
        return (candidates * masks).sum(1)


class XingGenerator(nn.Module):
    """XingGAN generator.

    forward(source_image (B, 3, H, W) in [-1, 1], source_pose (B, 18, H, W), target_pose (B, 18, H, W))
    -> generated image (B, 3, H, W); H and W must be divisible by 4. The attention backend (shared by
    all blocks, stateless) only changes how SA / AS are computed, never the parameters.
    ``query_key_channels`` defaults to channels // 8 (32 for ngf 64), as released. ``attention_factory``
    builds each block's attention step as ``attention_factory(channels, query_key_channels, backend)``
    (XingGAN++ passes its multi-scale attention). ``upsampling`` is the fusion head's x2 step: ``transposed``
    as released, or ``resize`` (nearest, then a convolution; no checkerboard).
    """

    def __init__(
        self,
        image_channels: int = 3,
        pose_channels: int = 18,
        ngf: int = 64,
        num_blocks: int = 9,
        norm: str = "instance",
        dropout: float = 0.5,
        attention: nn.Module | None = None,
        query_key_channels: int | None = None,
        padding_type: str = "reflect",
        attention_factory: Callable[[int, int, nn.Module], nn.Module] = XingAttention,
        upsampling: str = "transposed",
    ) -> None:
        super().__init__()
        assert num_blocks >= 1, num_blocks
        attention = attention if attention is not None else ReferenceAttention()
        channels = ngf * 2**NUM_DOWNSAMPLING
        self.image_channels = image_channels
        self.pose_channels = pose_channels
        self.appearance_encoder = downsampling_encoder(image_channels, ngf, norm, NUM_DOWNSAMPLING)
        self.shape_encoder = downsampling_encoder(2 * pose_channels, ngf, norm, NUM_DOWNSAMPLING)
        self.blocks = nn.ModuleList(
            XingBlock(
                channels if index == 0 else 2 * channels,
                channels,
                norm,
                dropout,
                padding_type,
                functools.partial(attention_factory, channels, query_key_channels or channels // 8, attention),
            )
            for index in range(num_blocks)
        )
        self.fusion = CoAttentionFusion(channels, 2 * channels, ngf, norm, image_channels, upsampling=upsampling)
        init_normal_(self)

    def check_inputs(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> None:
        """Raise InputShapeError naming the argument whose shape does not fit the model."""
        reference = source_image.shape
        factor = 2**NUM_DOWNSAMPLING
        for name, tensor, channels in (
            ("source_image", source_image, self.image_channels),
            ("source_pose", source_pose, self.pose_channels),
            ("target_pose", target_pose, self.pose_channels),
        ):
            shape = tuple(tensor.shape)
            if (
                len(shape) != 4
                or shape[1] != channels
                or shape[0] != reference[0]
                or shape[2:] != reference[2:]
                or shape[2] % factor
                or shape[3] % factor
            ):
                raise InputShapeError(
                    f"XingGenerator input '{name}' has shape {shape}; expected (B, {channels}, H, W) with the "
                    f"batch size and H, W of source_image {tuple(reference)} and H, W divisible by {factor}. "
                    f"Check the model's image_channels / pose_channels settings and the dataset's image size."
                )

    def block_outputs(
        self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor
    ) -> list[tuple[Tensor, Tensor]]:
        """Every block's (appearance (B, C, h, w), cat(appearance, shape) (B, 2C, h, w)), in order."""
        appearance = self.appearance_encoder(source_image)
        shape = self.shape_encoder(torch.cat((source_pose, target_pose), 1))
        outputs = []
        for block in self.blocks:
            appearance, shape = block(appearance, shape)
            outputs.append((appearance, shape))
        return outputs

    def fusion_inputs(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> tuple[Tensor, Tensor]:
        """What the fusion head reads: the last block's (appearance (B, C, h, w), shape (B, 2C, h, w))."""
        return self.block_outputs(source_image, source_pose, target_pose)[-1]

    def forward(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> Tensor:
        self.check_inputs(source_image, source_pose, target_pose)
        return self.fusion(*self.fusion_inputs(source_image, source_pose, target_pose), source_image)
