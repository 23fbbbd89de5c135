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

Decoding runs twice only for bad input: a fast decoder (:func:`_fast`, no paths,
exact JSON types) handles well-formed values, and anything it does not accept is
decoded again by the checking decoder, which returns the same value (for other
mapping or sequence types) or raises the error with its path.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Subnormal
from typing import Any, Literal, TypeAlias

import orjson

from worker.errors import RecordError

Value: TypeAlias = Any  # str | Decimal | bytes | bool | None | dict | list | frozenset
Item: TypeAlias = dict[str, Value]
WireItem: TypeAlias = Mapping[str, Mapping[str, Any]]


DYNAMODB_DIGITS = 38  # significant digits DynamoDB stores
_MIN_ADJUSTED, _MAX_ADJUSTED = -130, 125  # |n| in [1e-130, 1e126): DynamoDB's number range


def number_fault(d: Decimal) -> str | None:
    """Why DynamoDB cannot hold ``d`` exactly (``None``: it can): not finite, more than
    38 significant digits, or a magnitude outside 1e-130..9.99e125 (0 is allowed)."""
    if not d.is_finite():
        return "not finite"
    if d.is_zero():
        return None
    significant = len(bytes(d.as_tuple().digits).rstrip(b"\0"))  # digits without trailing zeros
    if significant > DYNAMODB_DIGITS:
        return f"{significant} significant digits (DynamoDB keeps {DYNAMODB_DIGITS})"
    if not _MIN_ADJUSTED <= d.adjusted() <= _MAX_ADJUSTED:
        return "outside DynamoDB's range 1e-130..9.99e125"
    return None


_DYNAMODB = Context(prec=DYNAMODB_DIGITS, Emax=_MAX_ADJUSTED, Emin=_MIN_ADJUSTED, traps=[Inexact, Overflow, Subnormal])
fit_add = _DYNAMODB.add
"""``a + b`` when DynamoDB holds the sum exactly, else ``ArithmeticError`` (Inexact, Overflow, Subnormal)."""


def fits(d: Decimal) -> bool:
    """``number_fault(d) is None``, decided by the decimal module in one call: a finite value
    that rounds to nothing else at 38 digits and needs no exponent outside DynamoDB's range."""
    if not d.is_finite():
        return False
    try:
        _DYNAMODB.plus(d)
    except ArithmeticError:  # Inexact (over 38 digits), Overflow, Subnormal (below 1e-130)
        return False
    return True


def _plain(v: str) -> bool:
    """A short plain number (at most 38 characters, no exponent): always within DynamoDB's limits."""
    return len(v) <= DYNAMODB_DIGITS and "e" not in v and "E" not in v


def _number(v: Any, path: str) -> Decimal:
    if not isinstance(v, str):
        raise RecordError(f"N must be a string, got {type(v).__name__}", field=path)
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise RecordError(f"N is not a number: {v!r}", field=path) from None
    if not d.is_finite():
        raise RecordError(f"N is not finite: {v!r}", field=path)
    if not _plain(v):
        fault = number_fault(d)
        if fault is not None:
            raise RecordError(f"N {_clip(v)}: {fault}", field=path)
    return d


def _clip(v: str) -> str:
    return v if len(v) <= 60 else f"{v[:57]}..."


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
    if not _utf8(v):
        raise RecordError("S is not valid UTF-8 (a lone surrogate)", field=path)
    return v


def _utf8(v: str) -> bool:
    """True when ``v`` encodes to UTF-8 (no lone surrogates, which JSON escapes can carry)."""
    if v.isascii():
        return True
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    return {_name(k, path): _checked(av, f"{path}.{k}") for k, av in v.items()}


def _name(k: Any, path: str) -> str:
    if not isinstance(k, str) or not _utf8(k):
        raise RecordError(f"attribute name {k!r} is not valid UTF-8 text", field=path)
    return k


def _list(v: Any, path: str) -> list[Value]:
    if not isinstance(v, list | tuple):
        raise RecordError(f"L must be an array, got {type(v).__name__}", field=path)
    return [_checked(av, f"{path}[{i}]") for i, av in enumerate(v)]


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
    try:
        return _fast(av)
    except Exception:  # not for the fast decoder: decode again, checking, to raise with the path
        return _checked(av, path)


def _checked(av: Any, path: str) -> Value:
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
    try:
        return {k: _fast(av) for k, av in wire.items() if _utf8(k) or _fail()}
    except Exception:  # see decode_value
        return {_name(k, path): _checked(av, f"{path}.{k}") for k, av in wire.items()}


def _fail() -> bool:
    raise _NotFast


Compare = Callable[[Value, Value, str, list[str]], None]


def walk_raw(old: Any, new: Any, path: str, out: list[str], *, compare: Compare, fields: tuple[str, str]) -> None:
    """Append to ``out`` the paths where two raw AttributeValues differ, decoding only what differs.

    Equal raw values are equal decoded values, so equal parts are skipped
    undecoded; two maps or two lists are descended in step (paths ``a.b``,
    ``a[1]``, the order of a walk of the decoded values); anything else is
    decoded and handed to ``compare`` (the diff's walk of decoded values).
    ``fields`` are the old and new images' error paths (``dynamodb.OldImage``).
    """
    if old == new:
        return
    if type(old) is dict and type(new) is dict and len(old) == 1 and len(new) == 1:
        # The common cases, decided without decoding; anything else (other tags,
        # malformed values) is decoded below, where errors get their path.
        tag = next(iter(old))
        ov, nv = old[tag], new.get(tag, _ABSENT)
        if nv is _ABSENT:  # another type
            pass
        elif tag == "S":  # two different strings
            if type(ov) is str and type(nv) is str:
                out.append(path)
                return
        elif tag == "N":  # numbers differ by value, not by text ("1" equals "1.0")
            if type(ov) is str and type(nv) is str:
                if ov.isdigit() and nv.isdigit() and ov[0] != "0" and nv[0] != "0" and ov.isascii() and nv.isascii():
                    out.append(path)  # two different integers in plain form (versions, counters, times)
                    return
                try:
                    a, b = Decimal(ov), Decimal(nv)
                except ArithmeticError:  # decimal.InvalidOperation
                    pass
                else:
                    if a.is_finite() and b.is_finite():
                        if a != b:
                            out.append(path)
                        return
        elif tag == "M" and type(ov) is dict and type(nv) is dict:
            for k, v in nv.items():
                o = ov.get(k, _ABSENT)
                if o is _ABSENT:
                    out.append(f"{path}.{k}")
                elif o != v:
                    walk_raw(o, v, f"{path}.{k}", out, compare=compare, fields=fields)
            out.extend(f"{path}.{k}" for k in ov if k not in nv)
            return
        elif tag == "L" and type(ov) is list and type(nv) is list:
            common = min(len(ov), len(nv))
            for i in range(common):
                if ov[i] != nv[i]:
                    walk_raw(ov[i], nv[i], f"{path}[{i}]", out, compare=compare, fields=fields)
            out.extend(f"{path}[{i}]" for i in range(common, max(len(ov), len(nv))))
            return
        elif tag == "BOOL" and type(ov) is bool and type(nv) is bool:
            out.append(path)
            return
    compare(decode_value(old, f"{fields[0]}.{path}"), decode_value(new, f"{fields[1]}.{path}"), path, out)


_ABSENT = object()


class _NotFast(Exception):
    """The fast decoder declines; the checking decoder decides."""


def _fast(av: Any) -> Value:
    """Decode a well-formed AttributeValue made of JSON types; raise on anything else.

    Accepts a subset of what :func:`_checked` accepts and returns the same
    values for it; every refusal (any exception) sends the value to ``_checked``.
    The common checks are written inline (``isascii`` before :func:`_utf8`, the
    plain-number test): a call per node is what this walk spends most on.
    """
    if type(av) is not dict or len(av) != 1:
        raise _NotFast
    for tag, v in av.items():
        if tag == "S":
            if type(v) is str and _utf8(v):
                return v
        elif tag == "N":
            if type(v) is str and _plain(v):
                d = Decimal(v)
                if d.is_finite():
                    return d
        elif tag == "M":
            if type(v) is dict:
                return {k: _fast(x) for k, x in v.items() if _utf8(k) or _fail()}
        elif tag == "L":
            if type(v) is list:
                return [_fast(x) for x in v]
        elif tag == "BOOL":
            if v is True or v is False:
                return v
        elif tag == "NULL":
            if v is True:
                return None
        elif tag == "SS":
            if type(v) is list and all(type(x) is str and _utf8(x) for x in v):
                return frozenset(v)
        elif tag == "NS":
            if type(v) is list and all(type(x) is str and _plain(x) for x in v):
                numbers = frozenset(map(Decimal, v))
                if all(d.is_finite() for d in numbers):
                    return numbers
        elif tag == "B":
            return _binary(v, "")
        elif tag == "BS" and type(v) is list:
            return frozenset(_binary(x, "") for x in v)
    raise _NotFast


# -- JSON-ready values (documents) --------------------------------------------------

Numbers = Literal["number", "string"]

# A number text Decimal prints back unchanged: plain notation, no redundant sign or zeros,
# not below 1e-6 (Decimal prints those with an exponent: "0.0000001" is "1E-7").
_SAME_TEXT = re.compile(r"(?!-?0\.0{6})-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?").fullmatch


def json_item(wire: Mapping[str, Any], path: str, numbers: Numbers) -> dict[str, Any]:
    """A whole image as JSON-ready values, for documents: ``orjson.dumps`` writes for it, byte
    for byte, what it writes for :func:`decode_item`'s result with the search documents'
    ``default`` hook, which turns Decimals into exact JSON numbers (or text), bytes into
    base64 and sets into sorted lists; built without those intermediate values.

    Numbers become ``orjson.Fragment`` of their exact text (or the text, for
    ``numbers="string"``), binary base64 text, sets sorted lists. Anything out of
    the ordinary is decoded the general way instead (and written through the
    ``default`` hook); errors raise :class:`RecordError` as :func:`decode_item` does.
    """
    try:
        number = _fragment if numbers == "number" else _text
        return {k: _json(av, number) for k, av in wire.items() if _utf8(k) or _fail()}
    except Exception:  # see decode_value
        return decode_item(wire, path)


_fragment = orjson.Fragment


def _text(v: str) -> Any:
    return v


def _json(av: Any, number: Callable[[str], Any]) -> Any:
    if type(av) is not dict or len(av) != 1:
        raise _NotFast
    for tag, v in av.items():
        if tag == "S":
            if type(v) is str and _utf8(v):
                return v
        elif tag == "N":
            if type(v) is str and len(v) <= DYNAMODB_DIGITS and _SAME_TEXT(v):
                return number(v)
            return number(str(_fast(av)))
        elif tag == "M":
            if type(v) is dict:
                return {k: _json(x, number) for k, x in v.items() if _utf8(k) or _fail()}
        elif tag == "L":
            if type(v) is list:
                return [_json(x, number) for x in v]
        elif tag == "BOOL":
            if v is True or v is False:
                return v
        elif tag == "NULL":
            if v is True:
                return None
        elif tag in {"SS", "B", "BS"}:
            return _json_default(_fast(av))
        elif tag == "NS":
            return [number(str(d)) for d in sorted(_fast(av))]
    raise _NotFast


def _json_default(v: Any) -> Any:
    """What the documents' ``default`` hook writes for bytes and sets of strings or bytes."""
    if type(v) is bytes:
        return base64.b64encode(v).decode("ascii")
    return [x if type(x) is str else base64.b64encode(x).decode("ascii") for x in sorted(v)]


# -- encoding (tests, fixture conversion, benchmarks) -------------------------------

Binary = Literal["base64", "bytes"]


def encode_value(v: Value, binary: Binary = "base64") -> dict[str, Any]:
    """Encode a Python value as an AttributeValue; ``binary`` picks the B/BS form."""
    if isinstance(v, bool):
        return {"BOOL": v}
    if v is None:
        return {"NULL": True}
    if isinstance(v, str):
        return {"S": v}
    if isinstance(v, Decimal | int):
        return {"N": str(v)}
    if isinstance(v, bytes | bytearray):
        return {"B": _blob(bytes(v), binary)}
    if isinstance(v, dict | Mapping):  # dict first: the ABC's check is slow
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
            return {"BS": [_blob(x, binary) for x in elems]}
    raise TypeError(f"cannot encode {type(v).__name__} as a DynamoDB attribute")


def _blob(x: bytes, binary: Binary) -> Any:
    return base64.b64encode(x).decode("ascii") if binary == "base64" else bytes(x)


def encode_item(item: Mapping[str, Value], binary: Binary = "base64") -> dict[str, Any]:
    return {k: encode_value(v, binary) for k, v in item.items()}
