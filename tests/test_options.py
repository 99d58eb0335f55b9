"""The option schemas: one per buildable class, agreeing with the constructor it feeds, and the parser's rules."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import pytest

from emca.build import REGISTRY
from emca.errors import ConfigError
from emca.options import FLAGS, bounded, parse


@pytest.mark.parametrize(
    ("kind", "target"), [(kind, target) for kind, entries in REGISTRY.items() for target in entries]
)
def test_each_schema_is_its_constructors_options_with_its_defaults(kind: str, target: str) -> None:
    """A config's options go to the constructor by name, and the ones it leaves out keep the constructor's default:
    so the schema must list exactly the constructor's arguments (less the injected ones), with the same defaults."""
    entry = REGISTRY[kind][target]
    parameters = {
        name: parameter.default
        for name, parameter in inspect.signature(entry.cls.__init__).parameters.items()
        if name != "self" and name not in entry.injected and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
    }
    schema = {field.name: field.default for field in dataclasses.fields(entry.options)}
    assert set(schema) == set(parameters), target
    for name, default in parameters.items():
        if default is inspect.Parameter.empty:  # a required argument (the data root): the schema demands it
            continue
        expected = schema[name]
        if dataclasses.is_dataclass(expected) and default is None:  # a nested group: None means its defaults
            continue
        assert expected == default, f"{target}.{name}: schema {expected!r}, constructor {default!r}"


@dataclass(frozen=True)
class Inner:
    enabled: bool = False
    size: int = bounded(2, minimum=1)


@dataclass(frozen=True)
class Outer:
    rate: float = bounded(0.5, minimum=0, maximum=1)
    name: str = bounded("a", choices=("a", "b"))
    width: int = bounded(8, minimum=1, size_limit=64)
    pair: tuple[int, ...] = bounded((1, 2), minimum=0, length=2, distinct=True, kind=int)
    inner: Inner = Inner()

    def problems(self, path: str) -> list[str]:
        return [f"{path}.width and {path}.inner.size disagree"] if self.inner.enabled and self.inner.size > 4 else []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rate": 2}, "Config field 'g.rate' is 2.0; expected a value <= 1."),
        ({"rate": "fast"}, "Config field 'g.rate' is 'fast'; expected a number."),
        ({"rate": float("nan")}, "Config field 'g.rate' is nan; expected a number (finite)."),
        ({"name": "c"}, "Config field 'g.name' is 'c'; expected one of ['a', 'b']."),
        ({"width": 100}, "Config field 'g.width' is 100; expected at most 64. emca bounds the sizes"),
        ({"width": True}, "Config field 'g.width' is True; expected an integer."),
        ({"pair": [1]}, "Config field 'g.pair' is [1]; expected 2 values."),
        ({"pair": [3, 3]}, "Config field 'g.pair' is [3, 3]; expected distinct values."),
        ({"inner": {"size": 0}}, "Config field 'g.inner.size' is 0; expected a value >= 1."),
        ({"inner": {"colour": 1}}, "Config field 'g.inner' has unknown keys ['colour']"),
        ({"inner": {"enabled": True, "size": 5}}, "g.width and g.inner.size disagree"),
        ({"rates": 1}, "Config field 'g' has unknown keys ['rates']"),
    ],
)
def test_every_message_names_the_path_and_what_was_expected(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(Outer, values, "g")
    assert str(error.value).startswith(message), str(error.value)


def test_parsed_values_are_typed_and_nested_groups_take_a_bare_switch() -> None:
    parsed = parse(Outer, {"rate": 1, "pair": [4, 5], "inner": True}, "g")
    assert parsed == Outer(rate=1.0, pair=(4, 5), inner=Inner(enabled=True))
    assert isinstance(parsed.rate, float) and parse(Outer, None, "g") == Outer()


def test_a_commands_keys_and_a_tools_flags_are_named_as_typed() -> None:
    with pytest.raises(ConfigError, match=r"^Config field 'rate' is 2.0"):
        parse(Outer, {"rate": 2}, "")
    with pytest.raises(ConfigError, match=r"^Unknown options \['speed'\]"):
        parse(Outer, {"speed": 2}, "")
    with pytest.raises(ConfigError, match=r"^--rate is 2.0; expected a value <= 1"):
        parse(Outer, {"rate": 2}, FLAGS)
