"""Typed option groups read from configs: one check of types, ranges and unknown keys, at the edge.

An option group is a frozen dataclass whose fields carry their type (from the default) and, in the
field's metadata, their range (``minimum`` / ``maximum`` / ``exclusive_minimum``) or ``choices``.
:func:`parse` turns a config mapping into one, or raises a :class:`ConfigError` that names the dotted
config path of the offending field and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from emca.errors import ConfigError

Options = TypeVar("Options")


def bounded(
    default: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    exclusive_maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
    length: int | None = None,
    distinct: bool = False,
    kind: type | None = None,
) -> Any:
    """A dataclass field with a range, a set of choices or (for a list) a length and distinct items; ``kind``
    gives the type of a field whose default is None (None then stays allowed)."""
    metadata = {
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "exclusive_maximum": exclusive_maximum,
        "choices": choices,
        "length": length,
        "distinct": distinct,
        "kind": kind,
    }
    return dataclasses.field(default=default, metadata=metadata)


def _expected(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]


def _scalar(value: Any, kind: type, path: str, field: dataclasses.Field) -> Any:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    valid = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer(),
        float: is_number and math.isfinite(value),
        str: isinstance(value, str),
    }[kind]
    if not valid:
        finite = " (finite)" if kind is float and is_number else ""
        raise ConfigError(f"Config field '{path}' is {value!r}; expected {_expected(kind)}{finite}.")
    value = kind(value)
    limits = field.metadata
    if limits.get("choices") and value not in limits["choices"]:
        raise ConfigError(f"Config field '{path}' is {value!r}; expected one of {list(limits['choices'])}.")
    ranges = (
        (limits.get("minimum"), lambda v, m: v >= m, ">="),
        (limits.get("exclusive_minimum"), lambda v, m: v > m, ">"),
        (limits.get("maximum"), lambda v, m: v <= m, "<="),
        (limits.get("exclusive_maximum"), lambda v, m: v < m, "<"),
    )
    for limit, holds, symbol in ranges:
        if limit is not None and not holds(value, limit):
            raise ConfigError(f"Config field '{path}' is {value!r}; expected a value {symbol} {limit}.")
    return value


def parse(options_class: type[Options], values: Mapping[str, Any] | None, path: str) -> Options:
    """``options_class`` from ``values`` (missing fields take their defaults); ``path`` is the dotted config
    path of ``values`` (``model.optim``), used in every error message."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"Config field '{path}' is {values!r}; expected a mapping.")
    fields = {field.name: field for field in dataclasses.fields(options_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"Config field '{path}' has unknown keys {unknown}; expected some of {list(fields)}.")
    parsed = {}
    for name, value in values.items():
        field, default = fields[name], fields[name].default
        if isinstance(default, tuple):
            if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
                raise ConfigError(f"Config field '{path}.{name}' is {value!r}; expected a list.")
            value = tuple(value)
            length = field.metadata.get("length")
            if length is not None and len(value) != length:
                raise ConfigError(f"Config field '{path}.{name}' is {list(value)}; expected {length} values.")
            kind = field.metadata.get("kind") or type(default[0])
            value = tuple(_scalar(item, kind, f"{path}.{name}[{i}]", field) for i, item in enumerate(value))
            if field.metadata.get("distinct") and len(set(value)) != len(value):
                raise ConfigError(f"Config field '{path}.{name}' is {list(value)}; expected distinct values.")
        elif default is None:
            if value is not None:
                value = _scalar(value, field.metadata["kind"], f"{path}.{name}", field)
        else:
            value = _scalar(value, type(default), f"{path}.{name}", field)
        parsed[name] = value
    return options_class(**parsed)
