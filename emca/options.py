"""Typed option groups read from configs: one check of types, ranges and unknown keys, at the edge.

An option group is a frozen dataclass whose fields carry their type (from the default) and, in the
field's metadata, their range (``minimum`` / ``maximum`` / ``exclusive_minimum``) or ``choices``. A field
whose default is itself an option group is parsed as a nested group (a bare true / false meaning its
``enabled`` field). Rules that tie fields together live in the group's ``problems(path)`` method, which
returns messages naming the fields by their dotted paths under ``path``. :func:`parse` turns a config
mapping into one, or raises a :class:`ConfigError` that names the dotted config path of the offending field
and what was expected.

This is the one place options are checked. Commands call it where they start (through the build registry,
the data and model schemas, the infer / demo / eval option groups); the classes the options configure
receive typed values and only assert them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from emca.errors import ConfigError

Options = TypeVar("Options")
FLAGS = "--"  # the path of a group whose fields are a command's flags


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
    size_limit: int | None = None,
) -> Any:
    """A dataclass field with a range, a set of choices or (for a list) a length and distinct items; ``kind``
    gives the type of a field whose default is None (None then stays allowed); ``size_limit`` is the largest
    size (a width, a depth) emca builds, so that a file cannot ask for unbounded memory."""
    metadata = {
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "exclusive_maximum": exclusive_maximum,
        "choices": choices,
        "length": length,
        "distinct": distinct,
        "kind": kind,
        "size_limit": size_limit,
    }
    return dataclasses.field(default=default, metadata=metadata)


def _join(path: str, name: str) -> str:
    """The dotted path of field ``name`` in the group at ``path``: "" for a command's own key=value options,
    ``--`` for a file tool's flags (``max_jump`` is ``--max-jump``)."""
    if path == FLAGS:
        return "--" + name.replace("_", "-")
    return f"{path}.{name}" if path else name


def _named(path: str) -> str:
    return path if path.startswith("--") else f"Config field '{path}'"


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
        raise ConfigError(f"{_named(path)} is {value!r}; expected {_expected(kind)}{finite}.")
    value = kind(value)
    limits = field.metadata
    if limits.get("choices") and value not in limits["choices"]:
        raise ConfigError(f"{_named(path)} is {value!r}; expected one of {list(limits['choices'])}.")
    ranges = (
        (limits.get("minimum"), lambda v, m: v >= m, ">="),
        (limits.get("exclusive_minimum"), lambda v, m: v > m, ">"),
        (limits.get("maximum"), lambda v, m: v <= m, "<="),
        (limits.get("exclusive_maximum"), lambda v, m: v < m, "<"),
    )
    for limit, holds, symbol in ranges:
        if limit is not None and not holds(value, limit):
            raise ConfigError(f"{_named(path)} is {value!r}; expected a value {symbol} {limit}.")
    if limits.get("size_limit") is not None and value > limits["size_limit"]:
        raise ConfigError(
            f"{_named(path)} is {value!r}; expected at most {limits['size_limit']}. emca bounds the sizes a "
            "config may ask for, so that a model file cannot take unbounded memory."
        )
    return value


def parse(options_class: type[Options], values: Mapping[str, Any] | None, path: str, stored: bool = False) -> Options:
    """``options_class`` from ``values`` (missing fields take their defaults); ``path`` is the dotted config
    path of ``values`` (``model.optim``; "" for a command's key=value options), used in every error message.

    ``stored``: ``values`` were read from a file an emca wrote (a checkpoint, an exported model), so a field it
    lacks may be an option added since: it takes the value in the class's ``BEFORE_ADDED``, the behaviour
    that file's emca had, and not today's default."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{_named(path)} is {values!r}; expected a mapping.")
    fields = {field.name: field for field in dataclasses.fields(options_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f"Config field '{path}' has unknown keys" if path else "Unknown options"
        raise ConfigError(f"{where} {unknown}; expected some of {list(fields)}.")
    parsed = {}
    for name, value in values.items():
        field, default = fields[name], fields[name].default
        if isinstance(default, tuple):
            if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
                raise ConfigError(f"{_named(_join(path, name))} is {value!r}; expected a list.")
            value = tuple(value)
            length = field.metadata.get("length")
            if length is not None and len(value) != length:
                raise ConfigError(f"{_named(_join(path, name))} is {list(value)}; expected {length} values.")
            kind = field.metadata.get("kind") or type(default[0])
            value = tuple(_scalar(item, kind, f"{_join(path, name)}[{i}]", field) for i, item in enumerate(value))
            if field.metadata.get("distinct") and len(set(value)) != len(value):
                raise ConfigError(f"{_named(_join(path, name))} is {list(value)}; expected distinct values.")
        elif dataclasses.is_dataclass(default):
            nested = {"enabled": value} if isinstance(value, bool) else value
            value = parse(type(default), nested, _join(path, name), stored)
        elif default is None:
            if value is not None:
                value = _scalar(value, field.metadata["kind"], _join(path, name), field)
        else:
            value = _scalar(value, type(default), _join(path, name), field)
        parsed[name] = value
    if stored:
        parsed = {**before_added(options_class), **parsed}
    options = options_class(**parsed)
    for problem in getattr(options, "problems", lambda _: [])(path):
        raise ConfigError(problem)
    return options


def before_added(options_class: type) -> dict[str, Any]:
    """The options ``options_class`` gained after files were written without them, each with the value that
    reproduces those files' models (its ``BEFORE_ADDED`` class variable; none by default)."""
    return dict(getattr(options_class, "BEFORE_ADDED", {}))


def given(options: Any, names: Iterable[str] | None) -> dict[str, Any]:
    """The parsed values of the fields ``names`` (those a config sets), as keyword arguments: the fields left out
    keep the defaults of the function they are passed to."""
    return {name: getattr(options, name) for name in names or ()}


def complete(options: Any) -> dict[str, Any]:
    """Every field of a parsed options dataclass as plain config values (nested options as mappings, tuples as
    lists): what a file stores so that a later change of a default cannot change the model it describes."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
        return [plain(item) for item in value] if isinstance(value, tuple) else value

    return plain(options)
