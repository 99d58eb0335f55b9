"""The XingGAN++ generator: XingGAN with multi-scale cross-attention, enhanced attention and dense fusion.

This project's reading of the 2025 paper (its body is not available; docs/xingganpp.md), one
switch per addition in ``model.generator`` (conf/model/emca.yaml):

- ``multi_scale``: the blocks' SA / AS attention over full resolution, pooled key/value pyramid levels
  and local windows, fused (emca.networks.multiscale, "EMSA" / "EMAS");
- ``enhanced_attention``: consensus refinement of the correlation matrices before the softmax, on the
  branch kinds listed in ``branches`` (emca.networks.enhanced_attention). With ``multi_scale`` off the
  only branch is ``full``, so EA alone needs ``branches: [full]`` (affordable at small sizes only);
- ``dense_fusion``: the fusion head reads the features of every block (emca.networks.dense_fusion).

Everything else (encoders, the blocks' conv branches and projections, the fusion head) is XingGAN's
code: this class is an :class:`~emca.networks.generator.XingGenerator` with another block factory and
an optional stage aggregation. With every switch off it builds exactly XingGAN: the same modules in the
same order, so the same parameter count and, from the same seed, the same weights and outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from emca.errors import ConfigError
from emca.networks.attention import CrossAttention
from emca.networks.dense_fusion import DenseStageAggregation
from emca.networks.generator import NUM_DOWNSAMPLING, XingBlock, XingGenerator
from emca.networks.multiscale import FUSIONS, SCALE_KINDS, MultiScaleXingBlock, ScaleSpec
from emca.options import parse


@dataclass(frozen=True)
class MultiScaleOptions:
    """``model.generator.multi_scale``: which attention branches each block runs, and how they are fused."""

    enabled: bool = False
    full: bool = True  # XingGAN's full-resolution branch
    pool_factors: tuple[int, ...] = (2, 4)  # key/value pyramid levels
    window_sizes: tuple[int, ...] = (4,)  # local windows, side in tokens
    fusion: str = "softmax"  # softmax | conv


@dataclass(frozen=True)
class EnhancedAttentionOptions:
    """``model.generator.enhanced_attention``: EA on the listed branch kinds (full | pool | window)."""

    enabled: bool = False
    branches: tuple[str, ...] = ("pool", "window")
    inner_channels: int = 16
    heads: int = 2


@dataclass(frozen=True)
class DenseFusionOptions:
    """``model.generator.dense_fusion``: the fusion head reads every block."""

    enabled: bool = False


def parse_options(options_class: type, section: str, values: Mapping[str, Any] | bool | None) -> Any:
    """A frozen options dataclass from a config mapping (``True`` / ``False`` for just ``enabled``)."""
    if values is None or isinstance(values, bool):
        return options_class(enabled=bool(values))
    return parse(options_class, values, f"model.generator.{section}")


def attention_scales(multi_scale: MultiScaleOptions) -> tuple[ScaleSpec, ...]:
    """The branches of each block: XingGAN's full attention alone when multi-scale is off."""
    if not multi_scale.enabled:
        return (ScaleSpec("full"),)
    for field, sizes, minimum in (
        ("pool_factors", multi_scale.pool_factors, 2),
        ("window_sizes", multi_scale.window_sizes, 1),
    ):
        if any(size < minimum for size in sizes) or len(set(sizes)) != len(sizes):
            raise ConfigError(
                f"Config field 'model.generator.multi_scale.{field}' is {list(sizes)}; expected "
                f"distinct integers >= {minimum}."
            )
    if multi_scale.fusion not in FUSIONS:
        raise ConfigError(
            f"Config field 'model.generator.multi_scale.fusion' is '{multi_scale.fusion}'; expected "
            f"one of {list(FUSIONS)}."
        )
    return (
        ((ScaleSpec("full"),) if multi_scale.full else ())
        + tuple(ScaleSpec("pool", factor) for factor in multi_scale.pool_factors)
        + tuple(ScaleSpec("window", size) for size in multi_scale.window_sizes)
    )


def block_factory(multi_scale: MultiScaleOptions, enhanced: EnhancedAttentionOptions) -> Callable[..., XingBlock]:
    """XingBlock when neither attention switch is on (exactly XingGAN), else the multi-scale block."""
    if not (multi_scale.enabled or enhanced.enabled):
        return XingBlock
    scales = attention_scales(multi_scale)
    enhanced_kinds = tuple(enhanced.branches) if enhanced.enabled else ()
    if enhanced.enabled and (
        set(enhanced_kinds) - set(SCALE_KINDS) or not any(spec.kind in enhanced_kinds for spec in scales)
    ):
        raise ConfigError(
            f"Config field 'model.generator.enhanced_attention.branches' is {list(enhanced.branches)}, but the blocks' "
            f"attention branches are {[spec.name for spec in scales]}: EA must name at least one of their kinds, "
            f"among {list(SCALE_KINDS)} (with multi_scale off, use branches [full])."
        )
    return functools.partial(
        MultiScaleXingBlock,
        scales=scales,
        fusion=multi_scale.fusion,
        enhanced_kinds=enhanced_kinds,
        enhanced_inner_channels=enhanced.inner_channels,
        enhanced_heads=enhanced.heads,
    )


class XingGANPlusPlusGenerator(XingGenerator):
    """XingGAN++ generator; inputs, output and the XingGAN arguments as :class:`XingGenerator`.

    ``multi_scale``, ``enhanced_attention`` and ``dense_fusion`` are mappings as in conf/model/emca.yaml
    (fields of :class:`MultiScaleOptions`, :class:`EnhancedAttentionOptions`, :class:`DenseFusionOptions`)
    or booleans for ``enabled`` alone; all off (the default) is XingGAN.
    """

    def __init__(
        self,
        image_channels: int = 3,
        pose_channels: int = 18,
        ngf: int = 64,
        num_blocks: int = 9,
        norm: str = "instance",
        dropout: float = 0.5,
        attention: CrossAttention | None = None,
        query_key_channels: int | None = None,
        padding_type: str = "reflect",
        multi_scale: Mapping[str, Any] | bool | None = None,
        enhanced_attention: Mapping[str, Any] | bool | None = None,
        dense_fusion: Mapping[str, Any] | bool | None = None,
    ) -> None:
        multi_scale_options = parse_options(MultiScaleOptions, "multi_scale", multi_scale)
        enhanced_options = parse_options(EnhancedAttentionOptions, "enhanced_attention", enhanced_attention)
        dense_options = parse_options(DenseFusionOptions, "dense_fusion", dense_fusion)
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
            block_factory=block_factory(multi_scale_options, enhanced_options),
        )
        self.multi_scale = multi_scale_options
        self.enhanced_attention = enhanced_options
        self.dense_fusion = dense_options
        channels = ngf * 2**NUM_DOWNSAMPLING
        # built after XingGAN's initialisation, so its own start ("last block only") is kept
        self.stage_aggregation = (
            DenseStageAggregation(num_blocks, channels, 2 * channels) if dense_options.enabled else None
        )

    def fusion_inputs(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> tuple[Tensor, Tensor]:
        """The fusion head's (appearance (B, C, h, w), shape (B, 2C, h, w)): densely aggregated over all
        blocks with dense fusion, else the last block's."""
        stages = self.block_outputs(source_image, source_pose, target_pose)
        return self.stage_aggregation(stages) if self.stage_aggregation is not None else stages[-1]
