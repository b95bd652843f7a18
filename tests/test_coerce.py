"""coerce.py on dataclasses of its own: it knows type hints only, nothing of charlm's config (test_config.py
covers the config's keys through load_config)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from charlm.coerce import INT64, build, coerce, field_type
from charlm.errors import ConfigError


@dataclass
class Inner:
    rate: float = 0.5
    names: list[str] = field(default_factory=list)
    limit: int | None = None


@dataclass
class Outer:
    label: str = "x"
    inner: Inner = field(default_factory=Inner)


def test_field_type_follows_dotted_keys_and_is_none_for_a_missing_one():
    assert field_type(Outer, "inner.names") == list[str]
    assert field_type(Outer, "label") is str
    assert field_type(Outer, "inner.nope") is None
    assert field_type(Outer, "label.deeper") is None  # a key under a plain field


def test_build_coerces_nested_values_and_fills_defaults():
    built = build(Outer, {"label": 7, "inner": {"rate": 2, "names": "one"}}, prefix="")
    assert built == Outer(label="7", inner=Inner(rate=2.0, names=["one"]))
    assert isinstance(built.inner.rate, float)
    assert build(Outer, {"inner": None}, prefix="") == Outer()  # an empty section: its defaults


def test_build_refuses_an_unknown_key_naming_the_nearest_one():
    with pytest.raises(ConfigError, match=r"unknown config key inner\.rat: did you mean inner\.rate\?"):
        build(Outer, {"inner": {"rat": 1.0}}, prefix="")
    with pytest.raises(ConfigError, match="inner must be a mapping"):
        build(Outer, {"inner": [1]}, prefix="")


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (True, int, "must be int"),  # a bool is not an int here
        (INT64, int, "out of range"),
        ("1e999", float, "finite"),
        ("abc", float, "must be float"),
        ({"a": 1}, list[str], "must be a list"),
    ],
)
def test_coerce_refuses_values_of_the_wrong_type(value, kind, message):
    with pytest.raises(ConfigError, match=message):
        coerce(value, kind, "k")


def test_coerce_accepts_none_for_an_optional_field_and_reads_floats_from_text():
    assert coerce(None, int | None, "k") is None
    assert coerce("1e-3", float, "k") == 0.001
    assert coerce(3, int | None, "k") == 3
