"""The XingGAN++ generator: XingGAN with multi-scale cross-attention, enhanced attention and dense fusion.

This project's reading of the 2025 paper (its body is not available; docs/xingganpp.md), one
switch per addition in ``model.generator`` (conf/model/xingganpp.yaml):

- ``multi_scale``: the blocks' SA / AS attention over full resolution, pooled key/value pyramid levels
  and local windows, fused (emca.networks.multiscale, "EMSA" / "EMAS");
- ``enhanced_attention``: consensus refinement of the correlation matrices before the softmax, on the
  branch kinds listed in ``branches`` (emca.networks.enhanced_attention). With ``multi_scale`` off the
  only branch is ``full``, so EA alone needs ``branches: [full]`` (affordable at small sizes only);
- ``dense_fusion``: the fusion head reads the features of every block (emca.networks.dense_fusion).

Everything else (encoders, the blocks' conv branches and projections, the fusion head) is XingGAN's
code: this class is an :class:`~emca.networks.generator.XingGenerator` with another attention factory and
an optional stage aggregation. With every switch off it builds exactly XingGAN: the same modules in the
same order, so the same parameter count and, from the same seed, the same weights and outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from emca.networks.cross_attention import XingAttention
from emca.networks.dense_fusion import DENSE_MODES, DenseStageAggregation
from emca.networks.enhanced_attention import CONSENSUS_AXES
from emca.networks.generator import NUM_DOWNSAMPLING, XingGenerator
from emca.networks.multiscale import FUSIONS, SCALE_KINDS, MultiScaleXingAttention, ScaleSpec
from emca.options import bounded


@dataclass(frozen=True)
class MultiScaleOptions:
    """``model.generator.multi_scale``: which attention branches each block runs, and how they are fused."""

    enabled: bool = False
    full: bool = True  # XingGAN's full-resolution branch
    # query, key and value pyramid levels, attended there and upsampled (the better-measured reading)
    pyramid_factors: tuple[int, ...] = bounded((2, 4), minimum=2, distinct=True, kind=int)
    # key/value levels against full-resolution queries (the first reading)
    pool_factors: tuple[int, ...] = bounded((), minimum=2, distinct=True, kind=int)
    window_sizes: tuple[int, ...] = bounded((4,), minimum=1, distinct=True, kind=int)  # local windows, in tokens
    fusion: str = bounded("softmax", choices=FUSIONS)
    BEFORE_ADDED: ClassVar[dict[str, Any]] = {"pyramid_factors": ()}  # checkpoints from before pyramid levels

    def problems(self, path: str) -> list[str]:
        if self.enabled and not (self.full or self.pool_factors or self.pyramid_factors or self.window_sizes):
            return [f"Config field '{path}': no attention branch is enabled; enable 'full' or give 'pool_factors', "
                    "'pyramid_factors' or 'window_sizes'."]  # fmt: skip
        return []


@dataclass(frozen=True)
class EnhancedAttentionOptions:
    """``model.generator.enhanced_attention``: EA on the listed branch kinds (full | pool | window)."""

    enabled: bool = False
    branches: tuple[str, ...] = bounded(("pyramid", "window"), choices=SCALE_KINDS, distinct=True, kind=str)
    inner_channels: int = bounded(16, minimum=1)
    heads: int = bounded(2, minimum=1)
    over: str = bounded("rows", choices=CONSENSUS_AXES)  # rows: the queries agree; columns: the keys agree
    BEFORE_ADDED: ClassVar[dict[str, Any]] = {"over": "rows"}  # checkpoints from before the columns reading


@dataclass(frozen=True)
class DenseFusionOptions:
    """``model.generator.dense_fusion``: the fusion head reads every block."""

    enabled: bool = False
    mode: str = bounded("gated", choices=DENSE_MODES)  # gated: gated sum; concat: 1x1 conv over all blocks
    BEFORE_ADDED: ClassVar[dict[str, Any]] = {"mode": "concat"}  # checkpoints from before the gated reading


def attention_scales(multi_scale: MultiScaleOptions) -> tuple[ScaleSpec, ...]:
    """The branches of each block: XingGAN's full attention alone when multi-scale is off."""
    if not multi_scale.enabled:
        return (ScaleSpec("full"),)
    return (
        ((ScaleSpec("full"),) if multi_scale.full else ())
        + tuple(ScaleSpec("pool", factor) for factor in multi_scale.pool_factors)
        + tuple(ScaleSpec("pyramid", factor) for factor in multi_scale.pyramid_factors)
        + tuple(ScaleSpec("window", size) for size in multi_scale.window_sizes)
    )


def enhanced_branch_problem(multi_scale: MultiScaleOptions, enhanced: EnhancedAttentionOptions) -> str | None:
    """What is wrong when EA names none of the blocks' branch kinds (it would refine nothing), else None."""
    scales = attention_scales(multi_scale)
    if not enhanced.enabled or any(spec.kind in enhanced.branches for spec in scales):
        return None
    return (
        f"is {list(enhanced.branches)}, but the blocks' attention branches are {[spec.name for spec in scales]}: "
        f"EA must name at least one of their kinds, among {list(SCALE_KINDS)} (with multi_scale off, use "
        "branches [full])."
    )


def attention_factory(
    multi_scale: MultiScaleOptions, enhanced: EnhancedAttentionOptions
) -> Callable[[int, int, nn.Module], XingAttention]:
    """XingAttention when neither attention switch is on (exactly XingGAN), else the multi-scale attention."""
    if not (multi_scale.enabled or enhanced.enabled):
        return XingAttention
    scales = attention_scales(multi_scale)
    enhanced_kinds = tuple(enhanced.branches) if enhanced.enabled else ()
    assert not enhanced.enabled or enhanced_branch_problem(multi_scale, enhanced) is None
    return functools.partial(
        MultiScaleXingAttention,
        scales=scales,
        fusion=multi_scale.fusion,
        enhanced_kinds=enhanced_kinds,
        enhanced_inner_channels=enhanced.inner_channels,
        enhanced_heads=enhanced.heads,
        enhanced_over=enhanced.over,
    )


class XingGANPlusPlusGenerator(XingGenerator):
    """XingGAN++ generator; inputs, output and the XingGAN arguments as :class:`XingGenerator`.

    ``multi_scale``, ``enhanced_attention`` and ``dense_fusion`` are the typed switches
    (:class:`MultiScaleOptions`, :class:`EnhancedAttentionOptions`, :class:`DenseFusionOptions`; emca.build
    parses them from the config's mappings); None or all off (the default) is XingGAN.
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
        multi_scale: MultiScaleOptions | None = None,
        enhanced_attention: EnhancedAttentionOptions | None = None,
        dense_fusion: DenseFusionOptions | None = None,
        upsampling: str = "transposed",
    ) -> None:
        multi_scale_options = multi_scale or MultiScaleOptions()
        enhanced_options = enhanced_attention or EnhancedAttentionOptions()
        dense_options = dense_fusion or DenseFusionOptions()
        super().__init__(
            image_channels,
            pose_channels,
            ngf,
            num_blocks,
            norm,
            dropout,
            attention,
            query_key_channels,
            padding_type,
            attention_factory=attention_factory(multi_scale_options, enhanced_options),
            upsampling=upsampling,
        )
        self.multi_scale = multi_scale_options
        self.enhanced_attention = enhanced_options
        self.dense_fusion = dense_options
        channels = ngf * 2**NUM_DOWNSAMPLING
        # built after XingGAN's initialisation, so its own start ("last block only") is kept
        self.stage_aggregation = (
            DenseStageAggregation(num_blocks, channels, 2 * channels, dense_options.mode)
            if dense_options.enabled
            else None
        )

    def fusion_inputs(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> tuple[Tensor, Tensor]:
        """The fusion head's (appearance (B, C, h, w), shape (B, 2C, h, w)): densely aggregated over all
        blocks with dense fusion, else the last block's."""
        stages = self.block_outputs(source_image, source_pose, target_pose)
        return self.stage_aggregation(stages) if self.stage_aggregation is not None else stages[-1]
