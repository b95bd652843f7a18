"""Plain data (what YAML and `--set` give) into typed dataclasses: each value checked against its field's type.

config.py says which dataclasses and what their values may be; this module only knows Python's type hints:
the declared type of a dotted key, a nested mapping built into its dataclass, a value coerced to its field.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing

from charlm.errors import ConfigError, finite, shown

INT64 = 2**63  # every integer fits a signed 64-bit int (seeds go to torch as such)


def field_type(root, key: str):
    """The declared type of a dotted key under the dataclass `root`, or None when the key does not exist
    (reported later)."""
    cls = root
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        cls = hints[part]
    return cls


def build(cls, raw: dict, prefix: str):
    """The dataclass `cls` from a mapping: unknown keys refused (with the nearest valid one), values coerced."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {shown(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {prefix}{near[0]}?" if near else f"valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key {prefix}{str(key)[:80]}: {hint}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = build(kind, value if value is not None else {}, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = coerce(value, kind, f"{prefix}{key}")
    return cls(**kwargs)


def coerce(value, kind, key: str):
    """Check a YAML value against a field's type; ints are accepted where floats are expected."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single prefix given on the command line
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {shown(value)}")
        return [coerce(v, item, key) for v in value]
    if kind is float and (isinstance(value, (int, str)) and not isinstance(value, bool)):
        try:
            value = float(value)  # an int, or a string: YAML reads 1e-3 (no dot) as one
        except OverflowError:
            raise ConfigError(f"{key} = {shown(value)} is out of range: use a finite number") from None
        except ValueError:
            pass
    if kind is float and isinstance(value, float):
        return finite(value, key, ConfigError)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {kind.__name__}, got {shown(value)}")
    if kind is int and not -INT64 <= value < INT64:
        raise ConfigError(f"{key} = {shown(value)} is out of range: use a number below 2^63")
    return value
