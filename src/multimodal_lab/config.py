"""Turn ``params:`` dictionaries into config dataclasses at the node boundary.

Kedro hands nodes plain dictionaries. Library code wants typed config objects, and a
mistyped key must fail loudly *naming the key* instead of silently using a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _check_scalar(value: Any, tp: Any, key: str) -> Any:
    """Light type check for the scalar types YAML produces; other types pass through."""
    if tp is bool and not isinstance(value, bool):
        raise TypeError(f"parameter '{key}' must be true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"parameter '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"parameter '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str and not isinstance(value, str):
        raise TypeError(f"parameter '{key}' must be a string, got {value!r}")
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
        TypeError: On a value of the wrong scalar type.
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
        tp, optional = _unwrap_optional(hints_by_name.get(name, Any))
        key = f"{where}.{name}"
        if value is None and optional:
            kwargs[name] = None
        elif dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            kwargs[name] = from_params(tp, value, where=key)
        else:
            kwargs[name] = _check_scalar(value, tp, key)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"missing parameter(s) {missing} in {where}")
    return cls(**kwargs)


def to_params(config: Any) -> dict[str, Any]:
    """The inverse of :func:`from_params`: a plain dict (for logging and saving)."""
    return dataclasses.asdict(config)
