"""Turn ``params:`` dictionaries into config dataclasses at the node boundary.

Kedro hands nodes plain dictionaries. Library code wants typed config objects, and a
mistyped key must fail loudly *naming the key* instead of silently using a default.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return "anything"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        plural = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
        if not inner:
            return "a list"
        return f"a list of {plural.get(inner[0]) or _type_name(inner[0])}"
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (the shapes YAML produces) and coerce it.

    Scalars, lists (``list[int]``), fixed and variable tuples, mappings, optionals,
    unions and nested dataclasses are checked; anything else passes through.

    Raises:
        TypeError: naming the key, the expected type and the value.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    wrong = TypeError(f"parameter '{key}' must be {_type_name(tp)}, got {value!r}")
    if tp is Any or isinstance(tp, (str, typing.TypeVar)):
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _check_value(value, arm, key)
            except TypeError:
                continue
        raise wrong
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_params(tp, value, where=key)
        raise wrong
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong
        return value
    if origin in (list, collections.abc.Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise wrong
        inner = args[0] if args else Any
        return [_check_value(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise wrong
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise TypeError(f"parameter '{key}' must have {len(args)} items, got {value!r}")
        return tuple(_check_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise wrong
        inner = args[1] if len(args) == 2 else Any
        return {k: _check_value(v, inner, f"{key}.{k}") for k, v in value.items()}
    return value


def from_params(cls: type[T], params: Mapping[str, Any] | None, *, where: str = "params") -> T:
    """Build dataclass ``cls`` from a parameter mapping, rejecting unknown keys.

    Nested dataclass fields are built from nested mappings; ``None`` gives all defaults.

    Args:
        cls: A dataclass type.
        params: The mapping from ``parameters_*.yml``.
        where: Dotted name used in error messages, e.g. ``"params:story_gpt2.train"``.

    Raises:
        ValueError: On an unknown key (with the closest known key suggested) or a
            missing required key.
        TypeError: On a value of the wrong type (scalars, lists, tuples, mappings and
            nested dataclasses are checked).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    params = dict(params or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, fields, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ValueError(
            f"unknown parameter {', '.join(hints)} in {where}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    hints_by_name = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in params.items():
        kwargs[name] = _check_value(value, hints_by_name.get(name, Any), f"{where}.{name}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"missing parameter(s) {missing} in {where}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        # The dataclass's own checks do not know where the values came from; say it.
        if where in str(error):
            raise
        raise type(error)(f"{where}: {error}") from error


def to_params(config: Any) -> dict[str, Any]:
    """The inverse of :func:`from_params`: a plain dict (for logging and saving)."""
    return dataclasses.asdict(config)
