"""Evaluation protocols: which metrics, computed exactly how (parsed from ``conf/eval/<protocol>.yaml`` into the
metric classes of :mod:`emca.metrics.definitions`). This is ``emca eval``'s edge: every field of a protocol is
checked here, where the command starts, and the metric classes receive checked values.

A protocol config has ``name``, ``metrics`` (the default list) and ``definitions``: one entry per
metric name with a ``type`` (ssim, psnr, lpips, fid, inception_score) and that type's settings.
Shared fields: ``mask`` (ssim and inception_score: score the images multiplied by the person mask of
the target keypoints, Market-1501's mask-SSIM / mask-IS) with ``point_radius`` / ``closing_size``
(``emca.data.skeleton.person_mask``), and ``white_padding`` (ssim only: ``{dataset preset: pixels}``
of white added left and right after masking; PATN pads DeepFashion by 40).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emca.errors import ConfigError
from emca.metrics.definitions import GENERATED_RANGE, METRIC_TYPES, InceptionScoreSpec, MetricSpec, SSIMSpec
from emca.metrics.inception import BACKBONES, LOGIT_BACKBONES
from emca.metrics.lpips import BACKBONE_WEIGHTS
from emca.metrics.ssim import SSIMWindow
from emca.options import parse

_WINDOW_FIELDS = {f.name for f in dataclasses.fields(SSIMWindow)}


@dataclass(frozen=True)
class Protocol:
    name: str
    metrics: tuple[MetricSpec, ...]


def parse_metric(name: str, definition: Mapping[str, Any], preset: str) -> MetricSpec:
    """Build the spec of metric ``name`` from its config entry, for a dataset of ``preset``."""
    where = f"eval.definitions.{name}"
    fields = dict(definition)
    kind = fields.pop("type", None)
    if kind not in METRIC_TYPES:
        raise ConfigError(f"{where}.type: expected one of {sorted(METRIC_TYPES)}, got {kind!r}.")
    cls = METRIC_TYPES[kind]
    padding = fields.pop("white_padding", None) or {}
    if padding and cls is not SSIMSpec:
        raise ConfigError(f"{where}.white_padding: only ssim metrics pad images (PATN's DeepFashion SSIM).")
    if not isinstance(padding, Mapping):
        raise ConfigError(f"{where}.white_padding: expected a mapping {{dataset preset: pixels}}, got {padding!r}.")
    fields["white_padding"] = int(padding.get(preset, 0))
    if cls is SSIMSpec:
        window_fields = {key: fields.pop(key) for key in list(fields) if key in _WINDOW_FIELDS}
        fields["window"] = parse(SSIMWindow, window_fields, where)
        data_range = fields.get("data_range", GENERATED_RANGE)
        if data_range != GENERATED_RANGE and not isinstance(data_range, (int, float)):
            raise ConfigError(
                f"{where}.data_range: expected '{GENERATED_RANGE}' or a number on the 0..255 scale, got {data_range!r}."
            )
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        accepted = sorted(
            (known | {"type", "white_padding"} | (_WINDOW_FIELDS if cls is SSIMSpec else set())) - {"name", "window"}
        )
        raise ConfigError(f"{where}: unknown field(s) {unknown} for a {kind} metric; accepted: {accepted}.")
    if fields.get("mask") and not cls.maskable:
        raise ConfigError(f"{where}.mask: only ssim and inception_score metrics can be masked.")
    if kind == "lpips" and fields.get("net", "alex") not in BACKBONE_WEIGHTS:
        raise ConfigError(f"{where}.net: expected one of {sorted(BACKBONE_WEIGHTS)}, got {fields['net']!r}.")
    backbone = fields.get("backbone")
    if backbone is not None and backbone not in BACKBONES:
        raise ConfigError(f"{where}.backbone: expected one of {list(BACKBONES)}, got {backbone!r}.")
    if cls is InceptionScoreSpec and backbone is not None and backbone not in LOGIT_BACKBONES:
        raise ConfigError(
            f"{where}.backbone: the Inception Score needs class logits, which {backbone!r} (a features-only "
            f"file) has not; use one of {list(LOGIT_BACKBONES)} (fid_backbone= sets FID and IS alike)."
        )
    return cls(name=name, **fields)


def parse_protocol(config: Mapping[str, Any], metric_names: Sequence[str], preset: str) -> Protocol:
    """The protocol ``config`` restricted to ``metric_names`` (each must be defined in it)."""
    definitions = config.get("definitions") or {}
    protocol = config.get("name", "?")
    if not metric_names:
        raise ConfigError("metrics: the list of metrics to compute is empty.")
    undefined = [name for name in metric_names if name not in definitions]
    if undefined:
        raise ConfigError(
            f"metrics: {undefined} not defined by the '{protocol}' protocol (conf/eval/{protocol}.yaml); "
            f"it defines {sorted(definitions)}."
        )
    if len(set(metric_names)) != len(metric_names):
        raise ConfigError(f"metrics: {list(metric_names)} names a metric twice.")
    return Protocol(protocol, tuple(parse_metric(name, definitions[name], preset) for name in metric_names))
