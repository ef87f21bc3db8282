"""Type checks for values from TOML, the command line and Python, against a dataclass's annotations.

A bad value gets a ``ConfigError`` that names the key, what was expected and what was given,
before any data is loaded or anything trained; never a TypeError from deep inside.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration value has the wrong type or is out of range; the message names the key."""


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{value!r} ({type(value).__name__})"


def _expected(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in args)
    if origin is tuple:
        return f"a list of {_expected(args[0])}s" if args else "a list"
    if origin is dict or tp is dict:
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "none"}.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` checked against the annotation ``tp``: ints where integers are expected (not bools, not
    2.5), numbers where floats are (as float), lists where tuples are (as tuples). Raises ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is typing.Any or tp is tuple and not args:
        return value
    if origin in (typing.Union, types.UnionType):
        for a in args:
            try:
                return coerce(key, value, a)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {_expected(tp)}, got {_describe(value)}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            item = args[0] if args else typing.Any
            return tuple(coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value))
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
    else:
        return value  # a type this module does not check
    raise ConfigError(f"{key} must be {_expected(tp)}, got {_describe(value)}")


def check_fields(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` for fields of dataclass ``cls``: unknown keys and wrongly typed values raise ConfigError."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where} has no field(s) {', '.join(unknown)}; its fields are: {', '.join(sorted(known))}")
    return {k: coerce(f"{where}: {k}", v, hints[k]) for k, v in values.items()}
