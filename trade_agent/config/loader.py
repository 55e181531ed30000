"""Strict conversion of YAML mappings into typed, frozen dataclasses.

An unknown key or a value of the wrong type is a :class:`~trade_agent.errors.ConfigError`
naming the key (``cnn_lstm.epochs``), what was found and the valid keys/types, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from trade_agent.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list[{_type_name(get_args(tp)[0])}]"
    if origin is dict:
        return f"mapping of {_type_name(get_args(tp)[1])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` checked against type ``tp``; raise ConfigError naming ``key``."""
    origin = get_origin(tp)
    ok = True
    if tp is Any:
        return value
    if origin is Literal:
        ok = value in get_args(tp)
    elif origin in (types.UnionType, typing.Union):
        for option in get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        ok = False
    elif origin is list:
        if isinstance(value, list | tuple):
            return [_coerce(v, get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
        ok = False
    elif origin is dict:
        if isinstance(value, Mapping):
            return {str(k): _coerce(v, get_args(tp)[1], f"{key}.{k}") for k, v in value.items()}
        ok = False
    elif tp is type(None):
        ok = value is None
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            ok = False
        else:
            return from_mapping(tp, value, key)  # type: ignore[arg-type]
    if not ok:
        raise ConfigError(
            f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}; fix it in params.yaml"
        )
    return value


# Keys that moved, with where they went (an old params.yaml gets the fix, not a key list).
MOVED_KEYS = {
    "cnn_lstm.threads": "base.threads (one thread plan for every stage: auto, or a count)",
    "rl.common.threads": "base.threads (one thread plan for every stage: auto, or a count)",
}


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | None, section: str) -> T:
    """Build dataclass ``cls`` from ``mapping``, strictly.

    Raises:
        ConfigError: on an unknown key or a value of the wrong type.
    """
    mapping = mapping or {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{section}: expected a mapping of keys, got {type(mapping).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(mapping) - fields)
    if unknown:
        moved = MOVED_KEYS.get(f"{section}.{unknown[0]}")
        if moved is not None:
            raise ConfigError(f"{section}.{unknown[0]} is now {moved}; remove it from '{section}'")
        valid = ", ".join(f"{name}: {_type_name(hints[name])}" for name in sorted(fields))
        raise ConfigError(f"{section}.{unknown[0]} is not a valid key; valid keys of '{section}' are: {valid}")
    values = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in mapping.items()}
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (for metadata and saved pipelines)."""
    return dataclasses.asdict(config)


def to_plain(value: Any) -> Any:
    """Dataclasses (also inside dicts, e.g. the ``grading`` section) -> plain dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value
