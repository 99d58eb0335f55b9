"""Building networks and data modules from configs, through a closed registry of emca classes.

A config names its implementation with ``_target_`` (Hydra's convention, so ``conf/`` can pick one), but
emca never hands a config to ``hydra.utils.instantiate`` to build what a checkpoint, an adapter or an
exported model describes: such a file may come from the internet, and ``instantiate`` would call any
importable function it names (``builtins.open``, ``torch.load``, ...). Here ``_target_`` is only a key
into :data:`REGISTRY`; the options beside it must be plain values (numbers, strings, booleans, lists,
dicts) that the entry's schema accepts (types, ranges, choices and the rules between fields, all checked by
``emca.options.parse``). Anything else is refused with an error naming the file (or the config) and the
field, before any object is made. This is the edge for networks and data: the classes themselves receive
checked values and only assert them.

Training builds through the same functions, so a config that trains is exactly a config that loads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from emca.data.batch import IMAGE_CHANNELS
from emca.data.datamodule import MAX_IMAGE_SIDE, PoseTransferDataModule, PoseTransferDataOptions
from emca.data.keypoints import DEFAULT_SIGMA, NUM_JOINTS
from emca.errors import CheckpointError, ConfigError, EmcaError
from emca.networks.attention import (
    ChunkedAttention,
    FusedAttention,
    ReferenceAttention,
    SDPAttention,
    fused_kernel_unavailable_reason,
)
from emca.networks.discriminator import DiscriminatorPair, ResnetDiscriminator
from emca.networks.generator import XingGenerator
from emca.networks.options import (
    ChunkedAttentionOptions,
    DiscriminatorOptions,
    FusedAttentionOptions,
    NoOptions,
    XingGANPlusPlusOptions,
    XingGeneratorOptions,
)
from emca.networks.xingganpp import XingGANPlusPlusGenerator
from emca.options import before_added, complete, given, parse
from emca.personalize.data import SubjectDataModule, SubjectDataOptions


@dataclass(frozen=True)
class Entry:
    """One buildable class, the schema of the options a config may set (a frozen dataclass of emca.options
    fields) and the constructor arguments emca supplies itself (modules, channel counts)."""

    cls: type
    options: type
    injected: tuple[str, ...] = ()


# kind -> {_target_ as written in conf/: entry}. Adding an architecture means adding a line here.
REGISTRY: dict[str, dict[str, Entry]] = {
    "generator": {
        "emca.networks.generator.XingGenerator": Entry(
            XingGenerator, XingGeneratorOptions, ("attention", "attention_factory")
        ),
        "emca.networks.xingganpp.XingGANPlusPlusGenerator": Entry(
            XingGANPlusPlusGenerator, XingGANPlusPlusOptions, ("attention",)
        ),
    },
    "discriminator": {
        "emca.networks.discriminator.ResnetDiscriminator": Entry(
            ResnetDiscriminator, DiscriminatorOptions, ("image_channels", "condition_channels")
        ),
    },
    "attention": {
        "emca.networks.attention.ReferenceAttention": Entry(ReferenceAttention, NoOptions),
        "emca.networks.attention.SDPAttention": Entry(SDPAttention, NoOptions),
        "emca.networks.attention.ChunkedAttention": Entry(ChunkedAttention, ChunkedAttentionOptions),
        "emca.networks.attention.FusedAttention": Entry(FusedAttention, FusedAttentionOptions),
    },
    "data": {
        "emca.data.datamodule.PoseTransferDataModule": Entry(PoseTransferDataModule, PoseTransferDataOptions),
        "emca.personalize.data.SubjectDataModule": Entry(SubjectDataModule, SubjectDataOptions),
    },
}
_FUSED_ALTERNATIVES = (
    "use model/attention=sdpa or model/attention=reference, or set model.attention.allow_reference_fallback=true"
)

_PLAIN_SCALARS = (str, int, float, bool, type(None))


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


def _checked(kind: str, config: Any, field: str, source: str | None) -> tuple[Entry, dict[str, Any], Any]:
    """The registry entry, the options ``config`` gives and their parsed options dataclass (see :func:`check`)."""
    entry, options = _registered(kind, config, field, source)
    accepted = {option.name for option in dataclasses.fields(entry.options)}
    for name in options:
        if name not in accepted:
            raise _error(
                source,
                f"{_where(source, f'{field}.{name}')}: {entry.cls.__name__} has no option '{name}'"
                + (" (emca sets it itself)" if name in entry.injected else "")
                + f"; its options are: {', '.join(sorted(accepted))}.",
            )
    try:
        parsed = parse(entry.options, options, field, stored=source is not None)
    except ConfigError as err:
        raise _error(source, f"'{source}': {err}" if source else str(err)) from err
    if entry.cls is FusedAttention and not parsed.allow_reference_fallback:
        reason = fused_kernel_unavailable_reason()
        if reason is not None:
            raise _error(
                source, f"{field}: the fused attention backend needs a CUDA GPU, but {reason}; {_FUSED_ALTERNATIVES}."
            )
    return entry, options, parsed


def check(kind: str, config: Any, field: str, source: str | None = None) -> tuple[Entry, dict[str, Any]]:
    """The registry entry that ``config`` names and its options checked against the entry's schema, as the
    keyword arguments to build it with (the options the config leaves out keep the constructor's defaults).

    ``field`` is the config's dotted path (``model.generator``) and ``source`` the file it was read from
    (None: the user's own config), both for error messages: a file's content is a CheckpointError, the user's
    config a ConfigError.
    """
    entry, options, parsed = _checked(kind, config, field, source)
    added_since = before_added(entry.options) if source is not None else {}  # options the file may predate
    return entry, given(parsed, {*options, *added_since})


def completed(kind: str, config: Mapping[str, Any], field: str) -> dict[str, Any]:
    """``config`` with every option of its registered class written out (defaults included), as training stores
    it in the checkpoint: a default changed later then cannot change the model the checkpoint describes."""
    _, _, parsed = _checked(kind, config, field, None)
    return {"_target_": config["_target_"], **complete(parsed)}


def build(kind: str, config: Mapping[str, Any], field: str, source: str | None = None, **injected: Any) -> Any:
    """Build the registered class that ``config['_target_']`` names, from the config's options checked by
    :func:`check`; ``injected`` are the arguments emca supplies."""
    entry, options = check(kind, config, field, source)
    try:
        return entry.cls(**options, **injected)
    except EmcaError as err:
        if source is None:
            raise
        raise CheckpointError(f"'{source}': {err}") from err


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
