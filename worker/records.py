"""Decode every DynamoDB Streams record shape into one frozen, typed :class:`StreamRecord`.

Shapes accepted by :func:`decode` (all auto-detected, per record):

* the KCL DynamoDB Streams adapter's record JSON (the ``data`` of a multilang
  record, base64 of JSON): ``ApproximateCreationDateTime`` in epoch
  milliseconds, B/BS base64, images possibly ``{}``;
* a multilang record itself (``{"data": "<base64>", "sequenceNumber": ...}``);
* GetRecords output as boto3 returns it (``datetime``, ``bytes``), as wire JSON
  (epoch seconds, base64) and as the AWS CLI prints it (ISO timestamps);
* one record of a Lambda event (``eventSourceARN``, lower-case ``userIdentity``).

Timestamps: a ``datetime`` is taken as is; an ISO string is parsed; a number is
epoch milliseconds when above 1e11 (year 5138 in seconds) and epoch seconds
otherwise. Stream timestamps have one-second resolution either way.

Raw AttributeValue dicts never leave this module (and :mod:`worker.attributes`):
images are decoded lazily, on first access, and cached. Equality of raw
top-level attributes is exposed through :meth:`StreamRecord.changed_attributes`
so the diff can skip decoding what did not change.

JSON text takes a fast path (:func:`_decode_text`): msgspec reads the record's
fields and leaves every top-level attribute value as a ``msgspec.Raw`` slice of
the text, so a record costs one scan, raw attributes compare as bytes, and a
batch held by the sinks is compact text rather than a tree of small dicts
(which costs more in allocation and garbage collection than the parse itself).
Whatever the fast path does not accept goes through the general path, which
gives the same record or names the error.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import msgspec
import orjson
import pybase64

from worker.attributes import Compare, Item, Value, decode_item, decode_value, walk_raw
from worker.errors import RecordError

UTC = dt.UTC
_IMAGE_FIELDS = ("dynamodb.OldImage", "dynamodb.NewImage")
_ABSENT = object()  # an attribute missing from one image
_UNREAD = object()  # an image present in the record's text, parsed from it when read
_Raw = msgspec.Raw
_MS_THRESHOLD = 1e11


class EventName(enum.Enum):
    INSERT = "INSERT"
    MODIFY = "MODIFY"
    REMOVE = "REMOVE"


class ViewType(enum.Enum):
    KEYS_ONLY = "KEYS_ONLY"
    NEW_IMAGE = "NEW_IMAGE"
    OLD_IMAGE = "OLD_IMAGE"
    NEW_AND_OLD_IMAGES = "NEW_AND_OLD_IMAGES"


@dataclass(frozen=True, slots=True)
class RawRecord:
    """What a source hands to the pipeline: an undecoded payload and where it came from.

    ``payload`` is JSON text (``bytes``/``str``) or an already parsed mapping.
    ``where`` is ``file:line`` for files and ``shard/sequence`` for streams.
    """

    payload: bytes | str | Mapping[str, Any]
    where: str
    shard_id: str | None = None


@dataclass(frozen=True, eq=False)
class StreamRecord:
    """One change of one item, decoded. Immutable; images decode on first access.

    ``sequence_number`` is the stream's decimal string (21-40 digits): compare
    with :attr:`sequence` (an ``int``), never as text.
    """

    event_name: EventName
    sequence_number: str
    shard_id: str | None
    event_id: str | None
    created_at: dt.datetime
    size_bytes: int | None
    view_type: ViewType | None
    ttl_delete: bool
    table: str | None
    where: str
    # A record from JSON text (``_text`` set) keeps the text, its keys as msgspec.Raw
    # values and, instead of its images, what the diff needs: ``_changes`` (MODIFY:
    # name, old and new raw value of each changed top-level attribute, flat) or ``_names``
    # (INSERT/REMOVE: the image's attribute names). ``_old``/``_new`` are then
    # ``None`` (no image) or ``_UNREAD``: the images are parsed from the text when
    # something reads them. A batch held by the sinks so costs a few objects per
    # record instead of one per attribute. Otherwise the keys and images are
    # mappings of AttributeValue dicts.
    _keys: Mapping[str, Any] = field(repr=False)
    _old: Any = field(repr=False)
    _new: Any = field(repr=False)
    _original: Mapping[str, Any] | None = field(repr=False)  # None: parsed from _text on demand
    _text: bytes | str | None = field(default=None, repr=False)
    _changes: tuple[Any, ...] | None = field(default=None, repr=False)
    _names: tuple[str, ...] | None = field(default=None, repr=False)
    # A snapshot record (a backfill's synthetic INSERT, see worker.sources.backfill): the
    # stream position its state sits at, as a decimal string; None for a stream record.
    snapshot_at: str | None = None

    @cached_property
    def sequence(self) -> int:
        return int(self.sequence_number)

    @cached_property
    def item_sequence(self) -> int:
        """Where this record's state sits among its item's changes, for sinks that order per item.

        A stream record's own sequence number; a snapshot record's ``snapshot_at`` (the
        position the snapshot was taken at, below every change after it), while its
        ``sequence`` orders it within its snapshot pseudo-shard (for per-shard marks).
        """
        at = self.snapshot_at
        return self.sequence if at is None else int(at)

    @cached_property
    def keys(self) -> Item:
        return self._decode(self._keys, "dynamodb.Keys") or {}

    @cached_property
    def old_image(self) -> Item | None:
        """The item before the change; ``None`` when the record has no old image."""
        return None if self._old is None else self._decode(self._image(0), "dynamodb.OldImage")

    @cached_property
    def new_image(self) -> Item | None:
        """The item after the change; ``None`` when the record has no new image."""
        return None if self._new is None else self._decode(self._image(1), "dynamodb.NewImage")

    def old_value(self, name: str) -> Value:
        """One top-level attribute of the old image (``None`` if absent), decoding only it."""
        return self._attr(self._attributes[0], name, "dynamodb.OldImage")

    def new_value(self, name: str) -> Value:
        """One top-level attribute of the new image (``None`` if absent), decoding only it."""
        return self._attr(self._attributes[1], name, "dynamodb.NewImage")

    def has_old(self, name: str) -> bool:
        return name in self._attributes[0]

    def has_new(self, name: str) -> bool:
        return name in self._attributes[1]

    @cached_property
    def _attributes(self) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """Both images' top-level AttributeValues, undecoded (``{}`` for no image)."""
        return self._image(0), self._image(1)

    def _image(self, which: int) -> Mapping[str, Any]:
        """One image's AttributeValues (0: old, 1: new): the cached ones if any, else parsed
        now and not kept (whoever decodes a whole image keeps the decoded one)."""
        cached = self.__dict__.get("_attributes")
        if cached is not None:
            return cached[which]  # type: ignore[no-any-return]
        image = self._new if which else self._old
        if image is _UNREAD:
            return _READ_IMAGE[which](self._text).dynamodb.image or {}  # type: ignore[arg-type]
        return image or {}

    def _raw_changes(self) -> tuple[Any, ...]:
        if self._changes is not None:
            return self._changes
        old, new = self._attributes
        return _raw_changes(old, new)

    def changed_paths(self, compare: Compare) -> list[str]:
        """Paths where the images differ, in the order of :meth:`changed_attributes`.

        A top-level name present on one side only is a path; an attribute on
        both sides whose raw values differ is walked raw, decoding only the
        parts that differ (:func:`~worker.attributes.walk_raw`), and ``compare``
        walks those decoded values. Nothing else is decoded.
        """
        out: list[str] = []
        try:
            flat = iter(self._raw_changes())
            for k, o, n in zip(flat, flat, flat, strict=True):
                if o is _ABSENT or n is _ABSENT:
                    out.append(k)
                elif type(o) is _Raw:  # kept raw from the text: parsed only now
                    walk_raw(_load_raw(o), _load_raw(n), k, out, compare=compare, fields=_IMAGE_FIELDS)
                else:
                    walk_raw(o, n, k, out, compare=compare, fields=_IMAGE_FIELDS)
        except RecordError as exc:
            raise exc.located(self.location, self.original()) from None
        return out

    def attribute_names(self, *, new: bool) -> list[str]:
        """Top-level attribute names of the new (or old) image, without decoding values."""
        if self._names is not None and (self._new if new else self._old) is not None:
            return list(self._names)
        return list(self._attributes[1 if new else 0])

    def changed_attributes(self) -> list[str]:
        """Top-level attribute names whose raw values differ between the images.

        Raw equality implies equality; raw inequality may still be equal once
        decoded (a set in another order), which the diff settles by decoding.
        """
        return list(self._raw_changes()[::3])

    @property
    def location(self) -> str:
        """``shard/sequence`` when the shard is known, else where the record was read."""
        if self.shard_id:
            return f"{self.shard_id}/{self.sequence_number}"
        return self.where

    def original(self) -> Mapping[str, Any]:
        """The record exactly as the source delivered it (parsed), for archives and dead letters."""
        if self._original is not None:
            return self._original
        return self._parsed

    @cached_property
    def _parsed(self) -> Mapping[str, Any]:
        parsed: Mapping[str, Any] = orjson.loads(self._text)  # type: ignore[arg-type]
        return parsed

    def original_json(self) -> bytes:
        """The original record as JSON; bytes become base64 and datetimes epoch seconds."""
        return to_json(self.original())

    def _decode(self, wire: Mapping[str, Any], path: str) -> Item:
        try:
            if self._text is not None and wire is self._keys:  # kept raw from the text: parsed only now
                return {k: decode_value(_load_raw(av), f"{path}.{k}") for k, av in wire.items()}
            return decode_item(wire, path)
        except RecordError as exc:
            raise exc.located(self.location, self.original()) from None

    def _attr(self, attrs: Mapping[str, Any], name: str, path: str) -> Value:
        if name not in attrs:
            return None
        av = attrs[name]
        try:
            return decode_value(_load_raw(av) if type(av) is _Raw else av, f"{path}.{name}")
        except RecordError as exc:
            raise exc.located(self.location, self.original()) from None


def _raw_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[Any, ...]:
    """``name, old, new`` (flat: one tuple for the garbage collector to see, not one per
    attribute) for each top-level attribute whose raw values differ, ``_ABSENT`` for a
    missing side: in the new image's order, then the names only in the old image."""
    out: list[Any] = []
    added = 0
    for k, v in new.items():
        o = old.get(k, _ABSENT)
        if o != v:
            out += (k, o, v)
            added += o is _ABSENT
    if len(new) - added != len(old):  # some names are only in the old image
        for k, v in old.items():
            if k not in new:
                out += (k, v, _ABSENT)
    return tuple(out)


def to_json(obj: Any) -> bytes:
    """JSON bytes for anything a source delivers (boto3's datetimes and bytes included)."""
    return orjson.dumps(obj, default=json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def json_default(obj: Any) -> Any:
    """JSON for what boto3 returns: bytes as base64, datetimes as epoch seconds."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, dt.datetime):
        return obj.timestamp()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


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
    created = _timestamp(ddb.get("ApproximateCreationDateTime"), fail)
    snapshot = obj.get("snapshot")
    at = snapshot.get("at") if isinstance(snapshot, Mapping) else None
    if snapshot is not None and not (isinstance(at, str) and at.isdigit()):
        raise fail("snapshot.at", f"a snapshot record needs its position as a decimal string, got {at!r}")
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
        snapshot_at=at,
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
    snapshot: Any = None  # a snapshot record: decoded by the general path


_read_wire = msgspec.json.Decoder(_WireRecord).decode
_load_raw = msgspec.json.Decoder().decode


class _OldImage(msgspec.Struct, gc=False, rename={"image": "OldImage"}):
    image: dict[str, Any] | None = None


class _NewImage(msgspec.Struct, gc=False, rename={"image": "NewImage"}):
    image: dict[str, Any] | None = None


class _OldOf(msgspec.Struct, gc=False):
    """A record read again for one image, parsed whole this time (everything else skipped)."""

    dynamodb: _OldImage


class _NewOf(msgspec.Struct, gc=False):
    dynamodb: _NewImage


_READ_IMAGE = (msgspec.json.Decoder(_OldOf).decode, msgspec.json.Decoder(_NewOf).decode)


_STAMPS: dict[int, dt.datetime] = {}  # ApproximateCreationDateTime -> created_at, recent ones


def _no_record(fld: str, msg: str) -> RecordError:
    return RecordError(msg, field=fld)


def _decode_text(text: bytes | str, where: str, shard_id: str | None) -> StreamRecord | None:
    """A record from JSON text in one scan, or ``None`` when :func:`decode_mapping` must judge it.

    Makes the same checks as :func:`decode_mapping` and returns an equal record;
    a multilang envelope, invalid JSON or any malformed field returns ``None``,
    so that the general path parses the text and names the error.
    """
    try:
        wire = _read_wire(text)
    except msgspec.DecodeError:
        return None
    ddb = wire.dynamodb
    if ddb is None or ddb.Keys is None or wire.snapshot is not None:
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
    if created is None:
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
