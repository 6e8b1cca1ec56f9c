"""Type checks for configuration dataclasses read from YAML files and checkpoints.

The dataclasses' own checks (__post_init__) compare values; a value of the wrong type would fail
there, or much later inside torch, with a traceback that names neither the key nor the file.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def from_fields(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """The dataclass `cls` made from a mapping of its fields (the inverse of dataclasses.asdict):
    ValueError naming unknown fields (after `prefix`, e.g. "policy.") and values of the wrong
    type (typed_fields)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f" of {prefix.rstrip('.')}" if prefix else ""
        raise ValueError(f"unknown fields{where} {unknown}; known: {sorted(names)}")
    return cls(**typed_fields(cls, values, prefix))


def typed_fields(cls: type, values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`values` (fields of the dataclass `cls`) checked against the fields' types, converted for
    the constructor: lists to tuples, integers to floats where a float is declared, mappings of a
    nested dataclass through its ``from_dict``.

    Raises ValueError naming the key (after `prefix`), its value and the type expected; a string
    that reads as a number gets the spelling YAML reads as one.
    """
    hints = typing.get_type_hints(cls)
    converted = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ValueError(_mismatch(f"{prefix}{key}", value, hint))
            converted[key] = hint.from_dict(value)
        elif not _matches(hint, value):
            raise ValueError(_mismatch(f"{prefix}{key}", value, hint))
        elif isinstance(value, list):
            converted[key] = tuple(value)
        elif hint is float:
            converted[key] = float(value)
        else:
            converted[key] = value
    return converted


def _matches(hint: Any, value: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is types.UnionType:
        return any(_matches(arg, value) for arg in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        items = args[:1] * len(value) if args[-1] is Ellipsis else args
        return len(items) == len(value) and all(map(_matches, items, value))
    if hint in (int, float) and isinstance(value, bool):
        return False  # YAML's true is no layer width
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is types.UnionType:
        return " or ".join(_describe(arg) for arg in args)
    if hint is type(None):
        return "null"
    if origin is tuple:
        count = "" if args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{_PLURALS[args[0]]}"
    if dataclasses.is_dataclass(hint):
        return f"a mapping of {hint.__name__} fields"
    return _SCALARS[hint]


def _mismatch(key: str, value: Any, hint: Any) -> str:
    message = f"{key} is {value!r} ({type(value).__name__}), expected {_describe(hint)}"
    if not (isinstance(value, str) and _matches(hint, 0)):
        return message
    try:
        number = float(value)
    except ValueError:
        return message
    if not math.isfinite(number):
        return message
    spelling = _yaml_number(value)
    if spelling == value.strip():
        return f"{message}; write {spelling} without quotes"
    return f"{message}; YAML reads {value.strip()} as text: write {spelling}"


def _yaml_number(text: str) -> str:
    """3e-4 -> 3.0e-4, 1e5 -> 1.0e+5: the spelling of a number that YAML 1.1 (PyYAML) reads as
    one (its floats need a dot and a signed exponent)."""
    match = re.fullmatch(r"([-+]?\d+)(?:\.(\d*))?[eE]([-+]?)(\d+)", text.strip())
    if match is None:
        return text.strip()
    whole, fraction, sign, exponent = match.groups()
    return f"{whole}.{fraction or 0}e{sign or '+'}{exponent}"
