"""Typed conversion of configuration data (TOML values and ``WORKER__*`` strings) into the sections.

Contract:

* A TOML value must already have its field's type (``retry_attempts = "3"`` is
  an error: the file says what it means).
* An environment value is a string converted by the type of the field it
  lands on: ``str`` fields take it verbatim (``WORKER__SEARCH__PASSWORD=12345``
  is the string ``"12345"``), ``int``/``float``/``bool`` parse it, lists and
  tables take a TOML array / inline table (a list of strings also takes
  ``a,b,c``). An error names the variable, not the file.
* Unknown keys are errors (a typo never silently falls back to a default).

The schema walk is a few dozen lines over the dataclasses' type hints, so that
every error can name its dotted key and its origin (file or variable).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from worker.errors import ConfigError

ENV_PREFIX = "WORKER__"
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class EnvValue:
    """A raw environment string waiting for its field's type."""

    name: str  # the variable, e.g. WORKER__SEARCH__PASSWORD
    raw: str


def apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Place every ``WORKER__A__B`` variable at ``data[a][b]``; returns dotted key -> variable."""
    origins: dict[str, str] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        given = [p for p in name[len(ENV_PREFIX) :].split("__") if p]
        parts = [p.lower() for p in given]
        if not parts:
            continue
        if parts[:2] == ["kcl", "properties"]:  # verbatim KCL property names are case-sensitive
            parts[2:] = given[2:]
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt_is_index = parts[i + 1].isdigit()
            if isinstance(node, list):
                node = _slot(node, part, name)
                if not isinstance(node, dict | list):
                    raise ConfigError(_dotted(parts[: i + 1]), "not a table", source=name)
                continue
            if not isinstance(node, dict):
                raise ConfigError(_dotted(parts[:i]), "not a table", source=name)
            if part not in node or not isinstance(node[part], dict | list):
                node[part] = [] if nxt_is_index else {}
            node = node[part]
        leaf = parts[-1]
        value = EnvValue(name, raw)
        if isinstance(node, list):
            _slot(node, leaf, name)
            node[int(leaf)] = value
        elif isinstance(node, dict):
            node[leaf] = value
        else:
            raise ConfigError(_dotted(parts[:-1]), "not a table", source=name)
        origins[_dotted(parts)] = name
    return origins


def _slot(node: list[Any], part: str, name: str) -> Any:
    if not part.isdigit():
        raise ConfigError(part, "expected an array index here", source=name)
    idx = int(part)
    while len(node) <= idx:
        node.append({})
    return node[idx]


def _dotted(parts: list[str]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def build(cls: type[Any], data: Any, prefix: str) -> Any:
    """An instance of dataclass ``cls`` from ``data``; each section's ``validate(prefix)`` runs."""
    if isinstance(data, EnvValue):
        raise ConfigError(prefix or "(root)", "is a section: set its keys (WORKER__SECTION__KEY)", source=data.name)
    if not isinstance(data, Mapping):
        raise ConfigError(prefix or "(root)", f"must be a table, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(_join(prefix, key), f"unknown key (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name in data:
            kwargs[name] = coerce(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(key, "required")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(prefix)
    return obj


def coerce(tp: Any, value: Any, key: str) -> Any:
    """``value`` as type ``tp``; an :class:`EnvValue` is parsed by ``tp`` first."""
    if isinstance(value, EnvValue):
        try:
            return coerce(tp, from_env(tp, value.raw, key), key)
        except ConfigError as exc:
            raise ConfigError(exc.key, exc.reason, source=value.name) from None
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(args[0], value, key)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is list:
        (inner,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(key, f"must be an array, got {type(value).__name__}")
        return [coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, inner = get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a table, got {type(value).__name__}")
        return {str(k): coerce(inner, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(typing.cast(type, tp), value, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported type {tp!r}")  # a bug in a section declaration


def from_env(tp: Any, raw: str, key: str) -> Any:
    """Parse an environment string by the field's type (the result is then checked by :func:`coerce`)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return from_env(args[0], raw, key)
    text = raw.strip()
    if tp is str or origin is Literal:
        return raw
    if tp is bool:
        low = text.lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ConfigError(key, f"must be true or false, got {raw!r}")
    if tp is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(key, f"must be an integer, got {raw!r}") from None
    if tp is float:
        try:
            return float(text.replace("_", ""))
        except ValueError:
            raise ConfigError(key, f"must be a number, got {raw!r}") from None
    if origin is list:
        if text.startswith("["):
            return _toml_value(text, key, "a TOML array")
        (inner,) = get_args(tp)
        return [from_env(inner, part.strip(), key) for part in text.split(",") if part.strip()]
    if origin is dict or dataclasses.is_dataclass(tp):
        return _toml_value(text, key, "a TOML inline table")
    if tp is Any:  # verbatim properties: a TOML scalar when it is one, else the string
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return raw
    return raw


def _toml_value(text: str, key: str, what: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(key, f"must be {what}: {exc}") from None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
