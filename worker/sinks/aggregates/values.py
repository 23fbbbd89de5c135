"""Values of aggregates: attribute paths, value comparison, group keys, exact metric vectors (pure)."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from worker.attributes import Value
from worker.canonical import EXACT, number_text
from worker.errors import ConfigError

__all__ = [
    "MISSING",
    "ZERO",
    "Path",
    "Vector",
    "add_vectors",
    "canonical_json",
    "canonical_json_any",
    "group_key",
    "is_zero",
    "jsonable",
    "parse_path",
    "resolve",
    "same_value",
]

ZERO = Decimal(0)
MISSING = object()  # a path that resolves to nothing

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]|(\.)")

Path = tuple[str | int, ...]
Vector = tuple[Decimal, ...]  # (count, sum metric 1, sum metric 2, ...)


# -- paths ---------------------------------------------------------------------------


def parse_path(text: str, key: str = "path") -> Path:
    """``ship.city`` -> ``("ship", "city")``; ``lines[2].qty`` -> ``("lines", 2, "qty")``."""
    out: list[str | int] = []
    pos = 0
    expect_name = True
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if m is None:
            raise ConfigError(key, f"invalid attribute path {text!r}")
        name, index, dot = m.groups()
        if dot:
            if expect_name:
                raise ConfigError(key, f"invalid attribute path {text!r}")
            expect_name = True
        elif index is not None:
            if not out or expect_name:
                raise ConfigError(key, f"invalid attribute path {text!r}")
            out.append(int(index))
        else:
            if not expect_name:
                raise ConfigError(key, f"invalid attribute path {text!r}")
            out.append(name)
            expect_name = False
        pos = m.end()
    if not out or expect_name:
        raise ConfigError(key, f"invalid attribute path {text!r}")
    return tuple(out)


def resolve(item: Mapping[str, Value], path: Path) -> Any:
    """The value at ``path``, or :data:`MISSING` (also when a step is not a map or list)."""
    node: Any = item
    for step in path:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return MISSING
            node = node[step]
        else:
            if not isinstance(node, dict) or step not in node:
                return MISSING
            node = node[step]
    return node


# -- values ------------------------------------------------------------------------------


def same_value(a: Any, b: Any) -> bool:
    """DynamoDB equality: numbers by value, never across types (``True`` is not ``1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def canonical_json(v: Value) -> str:
    """An unambiguous, deterministic JSON text for one value (group keys)."""
    if v is None or isinstance(v, bool | str):
        return orjson.dumps(v).decode()
    if isinstance(v, Decimal):
        return number_text(v)
    if isinstance(v, bytes):
        return '{"B":' + orjson.dumps(base64.b64encode(v).decode("ascii")).decode() + "}"
    if isinstance(v, dict):
        inner = ",".join(orjson.dumps(k).decode() + ":" + canonical_json(v[k]) for k in sorted(v))
        return '{"M":{' + inner + "}}"
    if isinstance(v, list):
        return "[" + ",".join(canonical_json(x) for x in v) + "]"
    if isinstance(v, frozenset):
        texts = sorted(canonical_json(x) for x in v)
        return '{"SET":[' + ",".join(texts) + "]}"
    raise TypeError(f"not a decoded attribute value: {type(v).__name__}")


def group_key(values: Sequence[Value]) -> str:
    """The sort key of a group's row: a JSON array of the group values (``["paid","Paris"]``)."""
    return "[" + ",".join(canonical_json(v) for v in values) + "]"


def jsonable(v: Value) -> Any:
    """A group value for the JSON report: integral numbers as ints, other numbers as text."""
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() and abs(v.adjusted()) < 30 else number_text(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode("ascii")
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, frozenset):
        return sorted((jsonable(x) for x in v), key=canonical_json_any)
    return v


def canonical_json_any(v: Any) -> str:
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


def add_vectors(a: Vector, b: Vector, sign: int = 1) -> Vector:
    if len(a) != len(b):
        raise ValueError(f"vectors of lengths {len(a)} and {len(b)}")
    return tuple(map(_ADD if sign > 0 else _SUBTRACT, a, b))  # C-level loops: a hot path


_ADD, _SUBTRACT = EXACT.add, EXACT.subtract


def is_zero(v: Vector) -> bool:
    return not any(v)  # a Decimal is false exactly when it is zero (either sign)
