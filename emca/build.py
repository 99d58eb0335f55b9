"""Building networks and data modules from configs, through a closed registry of emca classes.

A config names its implementation with ``_target_`` (Hydra's convention, so ``conf/`` can pick one), but
emca never hands a config to ``hydra.utils.instantiate`` to build what a checkpoint, an adapter or an
exported model describes: such a file may come from the internet, and ``instantiate`` would call any
importable function it names (``builtins.open``, ``torch.load``, ...). Here ``_target_`` is only a key
into :data:`REGISTRY`; the options beside it must be plain values (numbers, strings, booleans, lists,
dicts) that the class's constructor accepts. Anything else is refused with an error naming the file (or
the config) and the field, before any object is made.

Training builds through the same functions, so a config that trains is exactly a config that loads.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from emca.data.batch import IMAGE_CHANNELS
from emca.data.datamodule import PoseTransferDataModule
from emca.data.keypoints import DEFAULT_SIGMA, NUM_JOINTS
from emca.errors import CheckpointError, ConfigError, EmcaError
from emca.networks.attention import ChunkedAttention, FusedAttention, ReferenceAttention, SDPAttention
from emca.networks.discriminator import DiscriminatorPair, ResnetDiscriminator
from emca.networks.generator import XingGenerator
from emca.networks.xingganpp import (
    DenseFusionOptions,
    EnhancedAttentionOptions,
    MultiScaleOptions,
    XingGANPlusPlusGenerator,
)
from emca.options import parse
from emca.personalize.data import SubjectDataModule


@dataclass(frozen=True)
class Entry:
    """One buildable class, the constructor arguments emca supplies itself (modules, channel counts), which
    a config may never set, and the ranges of its numeric options."""

    cls: type
    injected: tuple[str, ...] = ()
    # numeric options and their (lowest, highest) allowed values, checked before the class is called
    ranges: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    # options that are option groups: parsed (types, ranges, unknown keys) into these dataclasses, a bare
    # true / false meaning just their ``enabled`` field
    groups: Mapping[str, type] = dataclasses.field(default_factory=dict)
    # size options and the largest value emca builds, so that a file cannot ask for unbounded memory
    limits: Mapping[str, int] = dataclasses.field(default_factory=dict)


# kind -> {_target_ as written in conf/: entry}. Adding an architecture means adding a line here.
# Sizes are bounded so that a config read from a file cannot ask for unbounded memory: the official models use
# ngf 64 and 9 blocks; the bounds allow 16x the width and 7x the depth (a model that large is then still
# refused by its parameter count, emca.checkpoint.LoadLimits, unless the user allows it)
MAX_WIDTH = 1024
MAX_BLOCKS = 64
_GENERATOR_RANGES = {
    "ngf": (1, math.inf),
    "num_blocks": (1, math.inf),
    "dropout": (0, 1),
    "query_key_channels": (1, math.inf),
}
_GENERATOR_LIMITS = {"ngf": MAX_WIDTH, "num_blocks": MAX_BLOCKS, "query_key_channels": MAX_WIDTH}
REGISTRY: dict[str, dict[str, Entry]] = {
    "generator": {
        "emca.networks.generator.XingGenerator": Entry(
            XingGenerator, ("attention", "attention_factory"), _GENERATOR_RANGES, limits=_GENERATOR_LIMITS
        ),
        "emca.networks.xingganpp.XingGANPlusPlusGenerator": Entry(
            XingGANPlusPlusGenerator,
            ("attention",),
            _GENERATOR_RANGES,
            {
                "multi_scale": MultiScaleOptions,
                "enhanced_attention": EnhancedAttentionOptions,
                "dense_fusion": DenseFusionOptions,
            },
            _GENERATOR_LIMITS,
        ),
    },
    "discriminator": {
        "emca.networks.discriminator.ResnetDiscriminator": Entry(
            ResnetDiscriminator,
            ("image_channels", "condition_channels"),
            {"ndf": (1, math.inf), "num_blocks": (0, math.inf), "dropout": (0, 1)},
            limits={"ndf": MAX_WIDTH, "num_blocks": MAX_BLOCKS},
        ),
    },
    "attention": {
        "emca.networks.attention.ReferenceAttention": Entry(ReferenceAttention),
        "emca.networks.attention.SDPAttention": Entry(SDPAttention),
        "emca.networks.attention.ChunkedAttention": Entry(ChunkedAttention, ranges={"chunk_size": (1, math.inf)}),
        "emca.networks.attention.FusedAttention": Entry(FusedAttention),
    },
    "data": {
        "emca.data.datamodule.PoseTransferDataModule": Entry(PoseTransferDataModule),
        "emca.personalize.data.SubjectDataModule": Entry(SubjectDataModule),
    },
}

_PLAIN_SCALARS = (str, int, float, bool, type(None))
# the largest image side a stored model may name: the field's largest published size is 512x352, and the 18
# pose maps of a 4,096 x 4,096 image already take 1.2 GB in fp32 (18 x 4,096^2 x 4 bytes)
MAX_IMAGE_SIDE = 4096


def _where(source: str | None, field: str) -> str:
    return f"'{source}', field '{field}'" if source else f"Config field '{field}'"


def _error(source: str | None, message: str) -> EmcaError:
    """A file's content is a CheckpointError; the user's own config a ConfigError."""
    return CheckpointError(message) if source else ConfigError(message)


def _check_plain(value: Any, source: str | None, field: str) -> None:
    """Options are data: plain scalars, lists and string-keyed dicts, and no Hydra directives."""
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, source, f"{field}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _error(source, f"{_where(source, field)}: option names must be strings, got {key!r}.")
            if key.startswith("_") and key.endswith("_"):
                raise _error(
                    source,
                    f"{_where(source, f'{field}.{key}')}: '{key}' is not allowed inside options; only the "
                    "top level of a network or data config names its class, and only from emca's registry.",
                )
            _check_plain(item, source, f"{field}.{key}")
        return
    raise _error(
        source,
        f"{_where(source, field)}: expected a plain value (number, string, boolean, list or dict), "
        f"got a {type(value).__name__}.",
    )


def _registered(kind: str, config: Any, field: str, source: str | None) -> tuple[Any, dict[str, Any]]:
    """The registry entry that ``config['_target_']`` names and the config's options, checked to be plain data."""
    if not isinstance(config, Mapping):
        raise _error(
            source,
            f"{_where(source, field)}: expected a mapping with '_target_' and options, got {type(config).__name__}.",
        )
    known = REGISTRY[kind]
    target = config.get("_target_")
    if target not in known:
        raise _error(
            source,
            f"{_where(source, field + '._target_')}: {target!r} is not one of emca's {kind} classes "
            f"({', '.join(sorted(known))}). emca builds only classes from its own registry (emca/build.py), "
            "never a name read from a file.",
        )
    options = {key: value for key, value in config.items() if key != "_target_"}
    _check_plain(options, source, field)
    return known[target], options


def build(kind: str, config: Mapping[str, Any], field: str, source: str | None = None, **injected: Any) -> Any:
    """Build the registered class that ``config['_target_']`` names, with the config's other entries as options.

    ``field`` is the config's dotted path (``model.generator``) and ``source`` the file it was read from
    (None: the user's own config), both for error messages. ``injected`` are the arguments emca supplies.
    """
    where = _where(source, field)
    entry, options = _registered(kind, config, field, source)
    cls = entry.cls
    parameters = inspect.signature(cls.__init__).parameters
    accepted = [name for name in parameters if name != "self" and name not in entry.injected]
    for name in options:
        if name not in accepted:
            raise _error(
                source,
                f"{_where(source, f'{field}.{name}')}: {cls.__name__} has no option '{name}'"
                + (" (emca sets it itself)" if name in entry.injected else "")
                + f"; its options are: {', '.join(accepted)}.",
            )
    for name, (lowest, highest) in entry.ranges.items():
        value = options.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lowest <= value <= highest:
            span = f">= {lowest}" if highest == math.inf else f"in [{lowest}, {highest}]"
            raise _error(source, f"{_where(source, f'{field}.{name}')} is {value!r}; expected a number {span}.")
    for name, limit in entry.limits.items():
        if name in options and options[name] > limit:
            raise _error(
                source,
                f"{_where(source, f'{field}.{name}')} is {options[name]!r}; expected at most {limit}. emca bounds the "
                "sizes a config may ask for, so that a model file cannot take unbounded memory.",
            )
    for name, group in entry.groups.items():
        if name in options:
            value = options[name]
            values = {"enabled": value} if isinstance(value, bool) else value
            try:
                options[name] = parse(group, values, f"{field}.{name}")
            except ConfigError as err:
                raise _error(source, f"'{source}': {err}" if source else str(err)) from err
    try:
        return cls(**options, **injected)
    except EmcaError as err:
        if source is None:
            raise
        raise CheckpointError(f"'{source}': {err}") from err
    except (TypeError, ValueError, RuntimeError) as err:
        raise _error(source, f"{where}: {cls.__name__} cannot be built from options {options}: {err}") from err


def build_generator(model: Mapping[str, Any], source: str | None = None) -> nn.Module:
    """The generator of a model config (``generator`` and ``attention`` entries) with its attention backend."""
    for name in ("generator", "attention"):
        if name not in model:
            raise _error(source, f"{_where(source, 'model')}: the model config has no '{name}' entry.")
    attention = build("attention", model["attention"], "model.attention", source)
    return build("generator", model["generator"], "model.generator", source, attention=attention)


def build_discriminators(model: Mapping[str, Any], source: str | None = None) -> DiscriminatorPair:
    """D_PB (conditioned on the 18 pose heatmaps) and D_PP (on the source image) of a model config's
    ``discriminator`` entry, both judging RGB images."""
    if "discriminator" not in model:
        raise _error(source, f"{_where(source, 'model')}: the model config has no 'discriminator' entry.")

    def judge(condition_channels: int) -> nn.Module:
        return build(
            "discriminator",
            model["discriminator"],
            "model.discriminator",
            source,
            image_channels=IMAGE_CHANNELS,
            condition_channels=condition_channels,
        )

    return DiscriminatorPair(pose=judge(NUM_JOINTS), appearance=judge(IMAGE_CHANNELS))


def build_datamodule(data: Mapping[str, Any], source: str | None = None) -> Any:
    """The Lightning data module of a data config."""
    return build("data", data, "data", source)


def image_frame(data: Mapping[str, Any], source: str | None = None) -> tuple[int, int, float]:
    """(height, width, pose-map sigma) that a model's stored data config names, checked as
    :func:`build_datamodule` checks the config (a registered data class when it names one, plain options)
    without building it: inference needs the frame, not the dataset."""
    if isinstance(data, Mapping) and "_target_" not in data:  # a frame alone (no dataset) is enough here
        _check_plain(data, source, "data")
        options = dict(data)
    else:
        _, options = _registered("data", data, "data", source)
    frame = []
    for name in ("height", "width"):
        value = options.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_IMAGE_SIDE:
            raise _error(
                source,
                f"{_where(source, f'data.{name}')} is {value!r}; expected the model's image {name} in "
                f"pixels, a whole number in [1, {MAX_IMAGE_SIDE}].",
            )
        frame.append(value)
    sigma = options.get("sigma", DEFAULT_SIGMA)
    sigma = DEFAULT_SIGMA if sigma is None else sigma
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma < math.inf:
        raise _error(
            source,
            f"{_where(source, 'data.sigma')} is {sigma!r}; expected the pose maps' Gaussian width in pixels, "
            "a positive number.",
        )
    return frame[0], frame[1], float(sigma)
