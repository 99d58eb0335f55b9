"""Mixture-of-Attention (MoA): two experts per cross-attention layer of a trained generator, mixed per pixel.

Every Xing block's SA / AS cross-attention becomes:

- the **prior** branch: the block's own attention step (``block.cross_attention``, frozen projections and
  backend), untouched;
- the **personalised** branch: a trainable copy of the block's attention (query / key / value projections,
  gate ``gamma`` and, in a XingGAN++ block, every multi-scale branch with its enhanced attention and the
  fusion weights) whose key / value sets also hold T subject tokens (features of the subject's reference
  photos from the frozen appearance encoder, pooled to a fixed grid): M = N + T keys at full resolution,
  pooled keys + T, window keys + T;
- a **router**: a small conv net on the layer input cat(appearance, shape) giving each pixel of each direction
  a softmax over (prior, personalised), initialised to favour the prior (zero last conv, bias toward it).

output = R_prior * prior + R_pers * personalised. ``routing_scale`` s in [0, 1] multiplies R_pers at inference
(R_prior = 1 - s * R_pers): s = 0 reproduces the base generator bit for bit, because then the mixture is
1.0 * prior + 0.0 * personalised. Everything of the base generator stays frozen and in eval mode.

Wraps any generator whose ``blocks`` expose the XingBlock attention structure (``branches``,
``attention_inputs``, ``cross_attention``, 1x1 ``query`` / ``key`` / ``value``, ``gamma``, ``attention``) and
that has an ``appearance_encoder``; tested on XingGAN and XingGAN++.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emca.errors import ConfigError
from emca.networks.generator import ExtraKeys, from_tokens, to_tokens

PRIOR, PERSONAL = 0, 1  # expert order on the routing axis
DIRECTIONS = 2  # SA and AS, stacked on the batch axis as in AttentionInputs


class PersonalizedAttention(nn.Module):
    """The personalised expert of one block: trainable copies of its attention parameters, plus subject tokens.

    forward(appearance (B, C, h, w), shape (B, C, h, w)) -> (2B, N, C) tokens, SA rows then AS rows: the
    block's own attention step (single-scale for XingGAN, every multi-scale branch with its enhanced
    attention for XingGAN++) run with the copies, the T subject tokens joining every query's key set.
    """

    # what a block's attention_inputs / cross_attention read; a multi-scale block adds the last three
    COPIED = ("query", "key", "value", "gamma", "scales", "scale_logits", "scale_mixing")

    def __init__(self, block: nn.Module, subject_tokens: Tensor) -> None:
        super().__init__()
        for name in self.COPIED:
            if hasattr(block, name):  # trainable copies, whatever the block's own requires_grad
                setattr(self, name, copy.deepcopy(getattr(block, name)).requires_grad_(True))
        self.fusion_mode = getattr(block, "fusion_mode", None)
        self.attention = block.attention  # the stateless backend, shared
        self.subject_tokens = nn.Parameter(subject_tokens.detach().clone())  # (T, C)
        # the block class's own methods, run on these copies: one definition of the attention step
        self.block_type = type(block)

    def forward(self, appearance: Tensor, shape: Tensor) -> Tensor:
        height, width = appearance.shape[-2:]
        inputs = self.block_type.attention_inputs(self, appearance, shape)
        subject = self.subject_tokens.t()[None, :, :, None]  # (1, C, T, 1): a one-column feature map
        rows = inputs.query.shape[0]
        extra = ExtraKeys(
            to_tokens(self.key(subject)).expand(rows, -1, -1), to_tokens(self.value(subject)).expand(rows, -1, -1)
        )
        return self.block_type.cross_attention(self, inputs, height, width, extra)


class Router(nn.Module):
    """Per-pixel softmax over (prior, personalised) for both directions of one block.

    forward(appearance (B, C, h, w), shape (B, C, h, w)) -> (2B, 2, h, w), rows SA then AS, channel 0 the
    prior's weight. Conv3x3 2C -> hidden, ReLU, conv1x1 -> 2 directions x 2 experts; the last conv starts at
    zero weight and a bias giving the prior weight ``initial_prior`` everywhere.
    """

    def __init__(self, channels: int, hidden: int, initial_prior: float) -> None:
        super().__init__()
        if not 0.5 <= initial_prior < 1.0:
            raise ConfigError(f"Config field 'router_init_prior' is {initial_prior}; expected a value in [0.5, 1).")
        self.features = nn.Sequential(nn.Conv2d(2 * channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.logits = nn.Conv2d(hidden, DIRECTIONS * 2, 1)
        nn.init.zeros_(self.logits.weight)
        prior_logit = math.log(initial_prior / (1.0 - initial_prior))
        with torch.no_grad():
            self.logits.bias.copy_(torch.tensor([prior_logit, 0.0] * DIRECTIONS))

    def forward(self, appearance: Tensor, shape: Tensor) -> Tensor:
        batch, _, height, width = appearance.shape
        logits = self.logits(self.features(torch.cat((appearance, shape), 1)))
        logits = logits.view(batch, DIRECTIONS, 2, height, width).transpose(0, 1).reshape(-1, 2, height, width)
        return torch.softmax(logits, dim=1)


class MixtureOfAttentionBlock(nn.Module):
    """A frozen block whose attention step is the routed mixture of its prior and a personalised expert.

    forward(appearance (B, C, h, w), shape (B, C_s, h, w)) -> the block's outputs (appearance' (B, C, h, w),
    cat(appearance', shape') (B, 2C, h, w)): XingBlock.forward with the attention step replaced by the mixture.
    After each forward, ``routing`` holds the expert weights used, (2B, 2, h, w) (SA rows, then AS rows),
    for the router loss and for inspection.
    """

    def __init__(self, block: nn.Module, subject_tokens: Tensor, router_hidden: int, initial_prior: float) -> None:
        super().__init__()
        self.block = block
        self.personal = PersonalizedAttention(block, subject_tokens)
        self.router = Router(block.value.out_channels, router_hidden, initial_prior).to(block.value.weight)
        self.routing_scale = 1.0
        self.routing: Tensor | None = None

    def forward(self, appearance: Tensor, shape: Tensor) -> tuple[Tensor, Tensor]:
        appearance, shape = self.block.branches(appearance, shape)
        height, width = appearance.shape[-2:]
        prior = self.block.cross_attention(self.block.attention_inputs(appearance, shape), height, width)
        personal = self.personal(appearance, shape)
        personal_weight = self.routing_scale * self.router(appearance, shape)[:, PERSONAL:]
        self.routing = torch.cat((1.0 - personal_weight, personal_weight), 1)
        weights = to_tokens(self.routing)  # (2B, N, 2)
        mixed = weights[..., PRIOR:PERSONAL] * prior + weights[..., PERSONAL:] * personal
        appearance, shape = from_tokens(mixed, height, width).chunk(2, dim=0)
        return appearance, torch.cat((appearance, shape), 1)


@torch.no_grad()
def subject_tokens(generator: nn.Module, reference_images: Tensor, token_grid: tuple[int, int]) -> Tensor:
    """Subject tokens from reference photos (P, 3, H, W) in [-1, 1]: the frozen appearance encoder's features
    average-pooled to ``token_grid`` (gh, gw) and averaged over the photos -> (gh * gw, C)."""
    if len(token_grid) != 2 or min(token_grid) < 1:
        raise ConfigError(f"Config field 'token_grid' is {list(token_grid)}; expected [rows, cols] of positive ints.")
    if reference_images.ndim != 4 or reference_images.shape[0] == 0:
        raise ConfigError(
            f"Subject tokens need reference photos (P, 3, H, W); got shape {tuple(reference_images.shape)}."
        )
    features = F.adaptive_avg_pool2d(generator.appearance_encoder(reference_images), tuple(token_grid))
    return features.mean(0).flatten(1).t().contiguous()


class PersonalizedGenerator(nn.Module):
    """A trained generator with every block wrapped in a :class:`MixtureOfAttentionBlock`.

    forward(source_image (B, 3, H, W), source_pose (B, 18, H, W), target_pose (B, 18, H, W)) -> (B, 3, H, W),
    the base generator's signature. The base generator's own parameters are frozen and it stays in eval mode
    (no dropout, no batch-norm statistics updates); only the experts, routers and subject tokens train.
    ``subject_tokens`` (T, C) initialises every block's tokens (they train per block). The blocks of
    ``generator`` are replaced in place.
    """

    def __init__(
        self, generator: nn.Module, subject_tokens: Tensor, router_hidden: int = 32, router_init_prior: float = 0.99
    ) -> None:
        super().__init__()
        generator.requires_grad_(False)
        for index, block in enumerate(generator.blocks):
            generator.blocks[index] = MixtureOfAttentionBlock(block, subject_tokens, router_hidden, router_init_prior)
        self.generator = generator.eval()

    @property
    def mixture_blocks(self) -> list[MixtureOfAttentionBlock]:
        return list(self.generator.blocks)

    def train(self, mode: bool = True) -> PersonalizedGenerator:
        super().train(mode)
        self.generator.eval()  # the frozen base keeps its inference behaviour; the experts have no mode
        return self

    def set_routing_scale(self, scale: float) -> None:
        """Scale the personalised routing: 0 gives the base generator exactly, 1 the trained mixture."""
        if not 0.0 <= scale <= 1.0:
            raise ConfigError(f"The personalisation scale is {scale}; expected a value in [0, 1].")
        for block in self.mixture_blocks:
            block.routing_scale = float(scale)

    def prior_weights(self) -> list[Tensor]:
        """R_prior of every block from the latest forward: a list of (2B, h, w), SA rows then AS rows."""
        if any(block.routing is None for block in self.mixture_blocks):
            raise RuntimeError("prior_weights() needs a forward pass first")
        return [block.routing[:, PRIOR] for block in self.mixture_blocks]

    def forward(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> Tensor:
        return self.generator(source_image, source_pose, target_pose)


def router_loss(prior_weights: list[Tensor], subject_mask: Tensor) -> Tensor:
    """Sum over layers of mean(((1 - M) * (1 - R_prior))^2): background pixels should use the prior.

    prior_weights: per layer (2B, h, w) (both directions stacked on the batch axis); subject_mask (B, 1, H, W)
    in [0, 1], area-resized to each layer's (h, w).
    """
    total = subject_mask.new_zeros(())
    for weights in prior_weights:
        mask = F.interpolate(subject_mask, size=weights.shape[-2:], mode="area")[:, 0]
        background = 1.0 - mask.repeat(DIRECTIONS, 1, 1)
        total = total + ((background * (1.0 - weights)) ** 2).mean()
    return total
