"""The schemas of the networks' options: what ``model.generator``, ``model.discriminator`` and
``model.attention`` may set, with types, ranges and choices.

``emca.build`` checks a config against these where a command starts (or a model file is read) and hands the
checked values to the constructors, which only assert them. Every default equals the constructor's
(``tests/test_options.py`` compares them), and fields left out of a config keep the constructor's default.
"""

from __future__ import annotations

from dataclasses import dataclass

from emca.networks.blocks import NORMS, PADDINGS, UPSAMPLINGS
from emca.networks.xingganpp import (
    DenseFusionOptions,
    EnhancedAttentionOptions,
    MultiScaleOptions,
    enhanced_branch_problem,
)
from emca.options import bounded

# Sizes are bounded so that a config read from a file cannot ask for unbounded memory: the official models use
# ngf 64 and 9 blocks; the bounds allow 16x the width and 7x the depth (a model that large is then still
# refused by its parameter count, emca.checkpoint.LoadLimits, unless the user allows it)
MAX_WIDTH = 1024
MAX_BLOCKS = 64


@dataclass(frozen=True)
class XingGeneratorOptions:
    """``model.generator`` of XingGAN (:class:`~emca.networks.generator.XingGenerator`)."""

    image_channels: int = bounded(3, minimum=1, maximum=4)
    pose_channels: int = bounded(18, minimum=1, size_limit=MAX_WIDTH)
    ngf: int = bounded(64, minimum=1, size_limit=MAX_WIDTH)
    num_blocks: int = bounded(9, minimum=1, size_limit=MAX_BLOCKS)
    norm: str = bounded("instance", choices=NORMS)
    dropout: float = bounded(0.5, minimum=0, maximum=1)
    query_key_channels: int | None = bounded(None, kind=int, minimum=1, size_limit=MAX_WIDTH)
    padding_type: str = bounded("reflect", choices=PADDINGS)
    upsampling: str = bounded("transposed", choices=UPSAMPLINGS)


@dataclass(frozen=True)
class XingGANPlusPlusOptions(XingGeneratorOptions):
    """``model.generator`` of XingGAN++: XingGAN's options and the three switches (a bare true / false sets a
    switch's ``enabled``)."""

    multi_scale: MultiScaleOptions = MultiScaleOptions()
    enhanced_attention: EnhancedAttentionOptions = EnhancedAttentionOptions()
    dense_fusion: DenseFusionOptions = DenseFusionOptions()

    def problems(self, path: str) -> list[str]:
        problem = enhanced_branch_problem(self.multi_scale, self.enhanced_attention)
        return [] if problem is None else [f"Config field '{path}.enhanced_attention.branches' {problem}"]


@dataclass(frozen=True)
class DiscriminatorOptions:
    """``model.discriminator`` (:class:`~emca.networks.discriminator.ResnetDiscriminator`)."""

    ndf: int = bounded(64, minimum=1, size_limit=MAX_WIDTH)
    num_blocks: int = bounded(3, minimum=0, size_limit=MAX_BLOCKS)
    norm: str = bounded("instance", choices=NORMS)
    dropout: float = bounded(0.5, minimum=0, maximum=1)
    padding_type: str = bounded("reflect", choices=PADDINGS)


@dataclass(frozen=True)
class NoOptions:
    """``model.attention`` of a backend without options (reference, SDPA)."""


@dataclass(frozen=True)
class ChunkedAttentionOptions:
    chunk_size: int = bounded(256, minimum=1)  # queries per chunk


@dataclass(frozen=True)
class FusedAttentionOptions:
    allow_reference_fallback: bool = False  # warn and compute the reference math where the kernel cannot run
