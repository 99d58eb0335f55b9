"""Mixture-of-Attention (MoA): two experts per cross-attention layer of a trained generator, mixed per pixel.

Every Xing block's attention step (``block.cross_attention``, an emca.networks.cross_attention.XingAttention
or XingGAN++'s multi-scale one) is replaced by a :class:`MixtureOfAttention` that holds:

- the **prior** expert: the block's own attention module, frozen, untouched;
- the **personalised** expert: a trainable deep copy of it (query / key / value projections, gate ``gamma``
  and, in XingGAN++, every multi-scale branch with its enhanced attention and the fusion weights), called
  with T *subject tokens* as memory tokens (features of the subject's reference photos from the frozen
  appearance encoder, pooled to a fixed grid): M = N + T keys at full resolution, pooled keys + T,
  window keys + T;
- a **router**: a small conv net on the layer input cat(appearance, shape) giving each pixel of each direction
  a softmax over (prior, personalised), initialised to favour the prior (zero last conv, bias toward it).

output = R_prior * prior + R_pers * personalised. ``routing_scale`` s in [0, 1] multiplies R_pers at inference
(R_prior = 1 - s * R_pers): s = 0 reproduces the base generator bit for bit, because then the mixture is
1.0 * prior + 0.0 * personalised. Everything of the base generator stays frozen and in eval mode.

Works on any generator whose ``blocks`` own their attention step as ``cross_attention`` and that has an
``appearance_encoder``; tested on XingGAN and XingGAN++.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emca.errors import InputShapeError
from emca.options import bounded

PRIOR, PERSONAL = 0, 1  # expert order on the routing axis
DIRECTIONS = 2  # SA and AS, in this order (the routing rows: SA for the appearance output, AS for the shape)


@dataclass(frozen=True)
class MoAOptions:
    """``model.moa``: subject tokens per layer (the encoder's features pooled to ``token_grid`` rows x cols),
    the router's hidden channels, and the prior's routing weight everywhere at the start."""

    token_grid: tuple[int, ...] = bounded((8, 4), minimum=1, length=2)
    router_hidden: int = bounded(32, minimum=1)
    router_init_prior: float = bounded(0.9, minimum=0.5, exclusive_maximum=1)


class Router(nn.Module):
    """Per-pixel softmax over (prior, personalised) for both directions of one block.

    forward(appearance (B, C, h, w), shape (B, C, h, w)) -> (2B, 2, h, w), rows SA then AS, channel 0 the
    prior's weight. Conv3x3 2C -> hidden, ReLU, conv1x1 -> 2 directions x 2 experts; the last conv starts at
    zero weight and a bias giving the prior weight ``initial_prior`` everywhere.
    """

    def __init__(self, channels: int, hidden: int, initial_prior: float) -> None:
        super().__init__()
        assert 0.5 <= initial_prior < 1.0, initial_prior
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


class MixtureOfAttention(nn.Module):
    """The routed mixture of a frozen attention step (the prior) and its personalised copy.

    forward(appearance (B, C, h, w), shape (B, C, h, w)) -> (appearance' , shape'), each (B, C, h, w): the
    attention step's signature, so the block calls it unchanged. After each forward, ``routing`` holds the
    expert weights used, (2B, 2, h, w) (SA rows, then AS rows), for the router loss and for inspection.
    """

    def __init__(self, prior: nn.Module, subject_tokens: Tensor, router_hidden: int, initial_prior: float) -> None:
        super().__init__()
        self.prior = prior
        self.personal = copy.deepcopy(prior).requires_grad_(True)  # trainable, whatever the prior's flags
        self.subject_tokens = nn.Parameter(subject_tokens.detach().clone())  # (T, C)
        self.router = Router(prior.value.out_channels, router_hidden, initial_prior).to(prior.value.weight)
        self.routing_scale = 1.0
        self.routing: Tensor | None = None

    def forward(self, appearance: Tensor, shape: Tensor) -> tuple[Tensor, Tensor]:
        prior = torch.cat(self.prior(appearance, shape), 0)  # (2B, C, h, w): SA rows, then AS rows
        personal = torch.cat(self.personal(appearance, shape, memory=self.subject_tokens), 0)
        personal_weight = self.routing_scale * self.router(appearance, shape)[:, PERSONAL:]
        self.routing = torch.cat((1.0 - personal_weight, personal_weight), 1)
        mixed = self.routing[:, PRIOR:PERSONAL] * prior + self.routing[:, PERSONAL:] * personal
        appearance, shape = mixed.chunk(2, dim=0)
        return appearance, shape


@torch.no_grad()
def subject_tokens(generator: nn.Module, reference_images: Tensor, token_grid: tuple[int, int]) -> Tensor:
    """Subject tokens from reference photos (P, 3, H, W) in [-1, 1]: the frozen appearance encoder's features
    average-pooled to ``token_grid`` (gh, gw) and averaged over the photos -> (gh * gw, C)."""
    assert len(token_grid) == 2 and min(token_grid) >= 1, token_grid
    if reference_images.ndim != 4 or reference_images.shape[0] == 0:
        raise InputShapeError(
            f"Subject tokens need reference photos (P, 3, H, W); got shape {tuple(reference_images.shape)}."
        )
    features = F.adaptive_avg_pool2d(generator.appearance_encoder(reference_images), tuple(token_grid))
    return features.mean(0).flatten(1).t().contiguous()


class PersonalizedGenerator(nn.Module):
    """A trained generator whose every block's attention step is a :class:`MixtureOfAttention`.

    forward(source_image (B, 3, H, W), source_pose (B, 18, H, W), target_pose (B, 18, H, W)) -> (B, 3, H, W),
    the base generator's signature. The base generator's own parameters are frozen and it stays in eval mode
    (no dropout, no batch-norm statistics updates); only the experts, routers and subject tokens train.
    ``subject_tokens`` (T, C) initialises every block's tokens (they train per block). The attention steps
    of ``generator`` are replaced in place.
    """

    def __init__(
        self, generator: nn.Module, subject_tokens: Tensor, router_hidden: int = 32, router_init_prior: float = 0.99
    ) -> None:
        super().__init__()
        generator.requires_grad_(False)
        for block in generator.blocks:
            block.cross_attention = MixtureOfAttention(
                block.cross_attention, subject_tokens, router_hidden, router_init_prior
            )
        self.generator = generator.eval()

    @property
    def mixtures(self) -> list[MixtureOfAttention]:
        return [block.cross_attention for block in self.generator.blocks]

    def train(self, mode: bool = True) -> PersonalizedGenerator:
        super().train(mode)
        self.generator.eval()  # the frozen base keeps its inference behaviour; the experts have no mode
        return self

    def set_routing_scale(self, scale: float) -> None:
        """Scale the personalised routing: 0 gives the base generator exactly, 1 the trained mixture."""
        if not 0.0 <= scale <= 1.0:
            raise ValueError(f"The personalisation scale is {scale}; expected a value in [0, 1].")
        for mixture in self.mixtures:
            mixture.routing_scale = float(scale)

    def prior_weights(self) -> list[Tensor]:
        """R_prior of every block from the latest forward: a list of (2B, h, w), SA rows then AS rows."""
        if any(mixture.routing is None for mixture in self.mixtures):
            raise RuntimeError("prior_weights() needs a forward pass first")
        return [mixture.routing[:, PRIOR] for mixture in self.mixtures]

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
