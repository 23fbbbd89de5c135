"""DynamoDB AttributeValue <-> Python values, at the edge.

Decoded values:

=====  =============================================
S      ``str``
N      ``decimal.Decimal`` built from the wire text (exact, keeps its text)
B      ``bytes`` (base64 text in JSON shapes, ``bytes`` from boto3)
BOOL   ``bool``
NULL   ``None``
M      ``dict[str, Value]``
L      ``list[Value]``
SS     ``frozenset[str]``
NS     ``frozenset[Decimal]``
BS     ``frozenset[bytes]``
=====  =============================================

A binary value is base64 when it is text and raw when it is ``bytes``; the two
never collide, so one decoder serves every shape. Errors raise
:class:`~worker.errors.RecordError` naming the attribute path at fault.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeAlias

from worker.errors import RecordError

Value: TypeAlias = Any  # str | Decimal | bytes | bool | None | dict | list | frozenset
Item: TypeAlias = dict[str, Value]
WireItem: TypeAlias = Mapping[str, Mapping[str, Any]]


def _number(v: Any, path: str) -> Decimal:
    if not isinstance(v, str):
        raise RecordError(f"N must be a string, got {type(v).__name__}", field=path)
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise RecordError(f"N is not a number: {v!r}", field=path) from None
    if not d.is_finite():
        raise RecordError(f"N is not finite: {v!r}", field=path)
    return d


def _binary(v: Any, path: str) -> bytes:
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    if isinstance(v, str):
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise RecordError("B is not valid base64", field=path) from None
    raise RecordError(f"B must be base64 text or bytes, got {type(v).__name__}", field=path)


def _string(v: Any, path: str) -> str:
    if not isinstance(v, str):
        raise RecordError(f"S must be a string, got {type(v).__name__}", field=path)
    return v


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise RecordError(f"BOOL must be true or false, got {v!r}", field=path)
    return v


def _null(v: Any, path: str) -> None:
    if v is not True:
        raise RecordError(f"NULL must be true, got {v!r}", field=path)


def _map(v: Any, path: str) -> dict[str, Value]:
    if not isinstance(v, Mapping):
        raise RecordError(f"M must be an object, got {type(v).__name__}", field=path)
    return {k: decode_value(av, f"{path}.{k}") for k, av in v.items()}


def _list(v: Any, path: str) -> list[Value]:
    if not isinstance(v, list | tuple):
        raise RecordError(f"L must be an array, got {type(v).__name__}", field=path)
    return [decode_value(av, f"{path}[{i}]") for i, av in enumerate(v)]


def _set(elem: Callable[[Any, str], Value], tag: str) -> Callable[[Any, str], frozenset[Any]]:
    def decode(v: Any, path: str) -> frozenset[Any]:
        if not isinstance(v, list | tuple):
            raise RecordError(f"{tag} must be an array, got {type(v).__name__}", field=path)
        return frozenset(elem(x, path) for x in v)

    return decode


_DECODERS: dict[str, Callable[[Any, str], Value]] = {
    "S": _string,
    "N": _number,
    "B": _binary,
    "BOOL": _bool,
    "NULL": _null,
    "M": _map,
    "L": _list,
    "SS": _set(_string, "SS"),
    "NS": _set(_number, "NS"),
    "BS": _set(_binary, "BS"),
}


def decode_value(av: Any, path: str = "") -> Value:
    """Decode one AttributeValue (``{"S": "x"}``) into a Python value."""
    if type(av) is not dict and not isinstance(av, Mapping):
        raise RecordError(f"attribute value must be an object, got {type(av).__name__}", field=path)
    if len(av) != 1:
        raise RecordError(f"attribute value must have exactly one type tag, got {sorted(av)}", field=path)
    for tag, v in av.items():
        dec = _DECODERS.get(tag)
        if dec is None:
            raise RecordError(f"unknown attribute type tag {tag!r}", field=path)
        return dec(v, path)
    raise AssertionError("unreachable")


def decode_item(wire: Any, path: str) -> Item:
    """Decode a whole image (``{"name": {"S": "x"}, ...}``); ``{}`` is an empty item."""
    if not isinstance(wire, Mapping):
        raise RecordError(f"image must be an object, got {type(wire).__name__}", field=path)
    return {k: decode_value(av, f"{path}.{k}") for k, av in wire.items()}


# -- encoding (tests, fixture conversion, benchmarks) -------------------------------

Binary = Literal["base64", "bytes"]


def encode_value(v: Value, binary: Binary = "base64") -> dict[str, Any]:
    """Encode a Python value as an AttributeValue; ``binary`` picks the B/BS form."""

    def b(x: bytes) -> Any:
        return base64.b64encode(x).decode("ascii") if binary == "base64" else bytes(x)

    if isinstance(v, bool):
        return {"BOOL": v}
    if v is None:
        return {"NULL": True}
    if isinstance(v, str):
        return {"S": v}
    if isinstance(v, Decimal | int):
        return {"N": str(v)}
    if isinstance(v, bytes | bytearray):
        return {"B": b(bytes(v))}
    if isinstance(v, Mapping):
        return {"M": {k: encode_value(x, binary) for k, x in v.items()}}
    if isinstance(v, list | tuple):
        return {"L": [encode_value(x, binary) for x in v]}
    if isinstance(v, set | frozenset):
        elems = sorted(v, key=lambda x: (str(type(x)), x))
        if not elems:
            raise ValueError("DynamoDB sets cannot be empty")
        first = elems[0]
        if isinstance(first, str):
            return {"SS": list(elems)}
        if isinstance(first, Decimal | int) and not isinstance(first, bool):
            return {"NS": [str(x) for x in elems]}
        if isinstance(first, bytes):
            return {"BS": [b(x) for x in elems]}
    raise TypeError(f"cannot encode {type(v).__name__} as a DynamoDB attribute")


def encode_item(item: Mapping[str, Value], binary: Binary = "base64") -> dict[str, Any]:
    return {k: encode_value(v, binary) for k, v in item.items()}
