"""Decoding every DynamoDB Streams record shape into one :class:`~worker.records.StreamRecord`.

Shapes accepted by :func:`decode` (all auto-detected, per record): see
:mod:`worker.records`. JSON text takes a fast path (:func:`_decode_text`, one
msgspec scan); whatever it does not accept goes through :func:`decode_mapping`,
which gives the same record or names the error.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import msgspec
import orjson
import pybase64

from worker.errors import RecordError
from worker.records import (
    _MS_THRESHOLD,
    _UNREAD,
    UTC,
    EventName,
    RawRecord,
    StreamRecord,
    ViewType,
    _raw_changes,
)

__all__ = ["decode", "decode_mapping", "expand", "parse_json"]


# -- decoding -------------------------------------------------------------------------


def decode(raw: RawRecord) -> StreamRecord:
    """Decode one raw record of any shape; raises :class:`RecordError` naming where and what."""
    payload = raw.payload
    if isinstance(payload, bytes | str):
        fast = _decode_text(payload, raw.where, raw.shard_id)
        if fast is not None:
            return fast
        obj = parse_json(payload, raw.where)
    elif type(payload) is dict and "dynamodb" not in payload and type(payload.get("data")) is str:
        return _decode_multilang(payload, raw.where, raw.shard_id)  # what the KCL source hands over
    else:
        obj = payload
    return decode_mapping(obj, where=raw.where, shard_id=raw.shard_id)


def parse_json(text: bytes | str, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON: {exc}", where=where, payload=_text(text)) from None


def _text(text: bytes | str) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def decode_mapping(obj: Any, *, where: str, shard_id: str | None = None) -> StreamRecord:
    """Decode a parsed record of any shape (see the module docstring)."""
    if not isinstance(obj, Mapping):
        raise RecordError(f"a record must be a JSON object, got {type(obj).__name__}", where=where, payload=obj)
    if "dynamodb" not in obj and isinstance(obj.get("data"), str):
        return _decode_multilang(obj, where, shard_id)
    ddb = obj.get("dynamodb")
    if not isinstance(ddb, Mapping):
        raise RecordError("not a DynamoDB Streams record", field="dynamodb", where=where, payload=obj)
    seq = ddb.get("SequenceNumber")
    if not isinstance(seq, str) or not seq.isdigit():
        raise RecordError(
            f"must be a decimal string, got {seq!r}", field="dynamodb.SequenceNumber", where=where, payload=obj
        )
    loc = f"{shard_id}/{seq}" if shard_id else where

    def fail(fld: str, msg: str) -> RecordError:
        return RecordError(msg, field=fld, where=loc, payload=obj)

    name = obj.get("eventName")
    event = _EVENTS.get(name) if isinstance(name, str) else None
    if event is None:
        raise fail("eventName", f"must be INSERT, MODIFY or REMOVE, got {name!r}")
    keys = ddb.get("Keys")
    if not isinstance(keys, Mapping):
        raise fail("dynamodb.Keys", "missing or not an object")
    old = _image(ddb, "OldImage", fail)
    new = _image(ddb, "NewImage", fail)
    view = ddb.get("StreamViewType")
    view_type = _VIEWS.get(view) if isinstance(view, str) else None
    if view is not None and view_type is None:
        raise fail("dynamodb.StreamViewType", f"unknown view type {view!r}")
    size = ddb.get("SizeBytes")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise fail("dynamodb.SizeBytes", f"must be an integer, got {size!r}")
    stamp = ddb.get("ApproximateCreationDateTime")
    created = arrival_time() if stamp is None else _timestamp(stamp, fail)
    return StreamRecord(
        event_name=event,
        sequence_number=seq,
        shard_id=shard_id,
        event_id=obj.get("eventID"),
        created_at=created,
        size_bytes=size,
        view_type=view_type,
        ttl_delete=_is_ttl(obj.get("userIdentity")),
        table=_table(obj.get("tableName"), obj.get("eventSourceARN")),
        where=where,
        _keys=keys,
        _old=old,
        _new=new,
        _original=obj,
        created_at_is_arrival=stamp is None,
    )


_EVENTS = {e.value: e for e in EventName}
_VIEWS = {v.value: v for v in ViewType}


class _WireStream(msgspec.Struct, gc=False):
    """The ``dynamodb`` object as the fast path reads it: attribute values stay raw JSON."""

    SequenceNumber: Any = None
    Keys: dict[str, msgspec.Raw] | None = None
    OldImage: dict[str, msgspec.Raw] | None = None
    NewImage: dict[str, msgspec.Raw] | None = None
    ApproximateCreationDateTime: Any = None
    SizeBytes: Any = None
    StreamViewType: Any = None


class _WireRecord(msgspec.Struct, gc=False):
    dynamodb: _WireStream | None = None
    eventName: Any = None
    eventID: Any = None
    userIdentity: Any = None
    tableName: Any = None
    eventSourceARN: Any = None


_read_wire = msgspec.json.Decoder(_WireRecord).decode
_STAMPS: dict[int, dt.datetime] = {}  # ApproximateCreationDateTime -> created_at, recent ones


def _no_record(fld: str, msg: str) -> RecordError:
    return RecordError(msg, field=fld)


def _decode_text(text: bytes | str, where: str, shard_id: str | None) -> StreamRecord | None:
    """A record from JSON text in one scan, or ``None`` when :func:`decode_mapping` must judge it.

    Makes the same checks as :func:`decode_mapping` and returns an equal record;
    a multilang envelope, invalid JSON or any malformed field returns ``None``,
    so that the general path parses the text and names the error.
    """
    if not _valid_utf8(text):
        return None  # the general path names the error (orjson refuses invalid UTF-8)
    try:
        wire = _read_wire(text)
    except msgspec.DecodeError:
        return None
    ddb = wire.dynamodb
    if ddb is None or ddb.Keys is None:
        return None
    name, seq, view, size = wire.eventName, ddb.SequenceNumber, ddb.StreamViewType, ddb.SizeBytes
    event = _EVENTS.get(name) if type(name) is str else None
    view_type = _VIEWS.get(view) if type(view) is str else None
    if event is None or type(seq) is not str or not seq.isdigit() or (view is not None and view_type is None):
        return None
    if size is not None and type(size) is not int:
        return None
    stamp = ddb.ApproximateCreationDateTime
    created = _STAMPS.get(stamp) if type(stamp) is int else None  # many records share a second
    if stamp is None:
        created = arrival_time()
    elif created is None:
        try:
            created = _timestamp(stamp, _no_record)
        except RecordError:
            return None
        if type(stamp) is int:
            if len(_STAMPS) >= 4096:
                _STAMPS.clear()
            _STAMPS[stamp] = created
    old, new = ddb.OldImage or None, ddb.NewImage or None  # {} is the adapter's "no image"
    changes = names = None
    if event is EventName.MODIFY:
        changes = _raw_changes(old or {}, new or {})
    elif (old is None) != (new is None):
        names = tuple(old or new)  # type: ignore[arg-type]
    return _record(
        event_name=event,
        sequence_number=seq,
        shard_id=shard_id,
        event_id=wire.eventID,
        created_at=created,
        size_bytes=size,
        view_type=view_type,
        ttl_delete=wire.userIdentity is not None and _is_ttl(wire.userIdentity),
        table=_table(wire.tableName, wire.eventSourceARN),
        where=where,
        _keys=ddb.Keys,
        _old=None if old is None else _UNREAD,
        _new=None if new is None else _UNREAD,
        _original=None,
        _text=text,
        _changes=changes,
        _names=names,
        created_at_is_arrival=stamp is None,
    )


def _record(**fields: Any) -> StreamRecord:
    """``StreamRecord(**fields)`` with every field given: the same instance without the
    frozen ``__init__``'s one ``object.__setattr__`` call per field (per record, it shows)."""
    record: StreamRecord = object.__new__(StreamRecord)
    record.__dict__.update(fields)
    return record


def _decode_multilang(obj: Mapping[str, Any], where: str, shard_id: str | None) -> StreamRecord:
    data = obj["data"]
    try:
        # pybase64 (SIMD) is ten times faster than binascii and stricter
        # (canonical padding only); what it refuses is judged as before.
        text = pybase64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        try:
            text = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RecordError("multilang record data is not base64", field="data", where=where, payload=obj) from None
    fast = _decode_text(text, where, shard_id)
    if fast is not None:
        return fast
    inner = parse_json(text, where)
    return decode_mapping(inner, where=where, shard_id=shard_id)


def _image(ddb: Mapping[str, Any], name: str, fail: Any) -> Mapping[str, Any] | None:
    img = ddb.get(name)
    if img is None or (isinstance(img, Mapping) and not img):
        return None  # absent, null, or {} (the adapter's empty image): no real item is empty
    if not isinstance(img, Mapping):
        raise fail(f"dynamodb.{name}", f"must be an object, got {type(img).__name__}")
    return img


def _timestamp(v: Any, fail: Any) -> dt.datetime:
    fld = "dynamodb.ApproximateCreationDateTime"
    if isinstance(v, dt.datetime):
        return v.astimezone(UTC) if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            try:
                parsed = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                raise fail(fld, f"not a timestamp: {v!r}") from None
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(v, int | float) and not isinstance(v, bool):
        secs = v / 1000 if v > _MS_THRESHOLD else v
        try:
            return _from_epoch(secs)
        except (OverflowError, OSError, ValueError):
            raise fail(fld, f"timestamp out of range: {v!r}") from None
    raise fail(fld, f"missing or not a timestamp: {v!r}")


def arrival_time() -> dt.datetime:
    """Now, in whole seconds: the time of a record that carries no creation time."""
    return dt.datetime.now(UTC).replace(microsecond=0)


def _valid_utf8(text: bytes | str) -> bool:
    """Whether the text is valid UTF-8 (msgspec leaves raw slices unchecked; ASCII is the fast case)."""
    if text.isascii():
        return True
    try:
        if isinstance(text, bytes):
            text.decode("utf-8")
        else:
            text.encode("utf-8")
    except UnicodeError:
        return False
    return True


@lru_cache(maxsize=1024)  # a busy shard has many records per (one-second) timestamp
def _from_epoch(secs: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(secs, UTC)


def _is_ttl(identity: Any) -> bool:
    """True for deletions made by DynamoDB's TTL process (any key casing)."""
    if identity is None or not isinstance(identity, Mapping):
        return False
    lowered = {str(k).lower(): v for k, v in identity.items()}
    return lowered.get("type") == "Service" and lowered.get("principalid") == "dynamodb.amazonaws.com"


def _table(name: Any, arn: Any) -> str | None:
    """The table: ``tableName`` when given, else the one named in ``eventSourceARN``."""
    if isinstance(name, str):
        return name
    if isinstance(arn, str) and ":table/" in arn:
        return arn.split(":table/", 1)[1].split("/", 1)[0]
    return None


# -- containers -------------------------------------------------------------------------


def expand(obj: Any) -> Iterator[Any]:
    """The records inside one parsed JSON value: a Lambda event or GetRecords page
    (``{"Records": [...]}``), a multilang ``processRecords`` message
    (``{"records": [...]}``), or a single record."""
    if isinstance(obj, Mapping):
        for key in ("Records", "records"):
            inner = obj.get(key)
            if isinstance(inner, list) and "dynamodb" not in obj:
                yield from inner
                return
    yield obj
