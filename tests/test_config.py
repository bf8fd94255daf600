from dataclasses import dataclass, field

import pytest

from multimodal_lab.config import from_params, to_params


@dataclass
class Inner:
    rate: float = 0.1
    name: str = "x"


@dataclass
class Outer:
    steps: int
    inner: Inner = field(default_factory=Inner)
    flag: bool = False
    maybe: int | None = None


def test_builds_nested_dataclass_and_coerces_int_to_float():
    cfg = from_params(Outer, {"steps": 3, "inner": {"rate": 1}, "maybe": None})
    assert cfg.steps == 3 and cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    assert to_params(cfg) == {"steps": 3, "inner": {"rate": 1.0, "name": "x"}, "flag": False, "maybe": None}


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ValueError, match=r"'stpes' \(did you mean 'steps'\?\) in params:demo"):
        from_params(Outer, {"stpes": 3}, where="params:demo")


def test_unknown_nested_key_names_the_full_path():
    with pytest.raises(ValueError, match=r"'rte'.*params:demo\.inner"):
        from_params(Outer, {"steps": 1, "inner": {"rte": 2}}, where="params:demo")


def test_wrong_type_names_the_key():
    with pytest.raises(TypeError, match=r"params:demo\.steps' must be an integer"):
        from_params(Outer, {"steps": "ten"}, where="params:demo")
    with pytest.raises(TypeError, match=r"flag' must be true or false"):
        from_params(Outer, {"steps": 1, "flag": "yes"}, where="params:demo")


def test_missing_required_key():
    with pytest.raises(ValueError, match=r"missing parameter\(s\) \['steps'\]"):
        from_params(Outer, {})
