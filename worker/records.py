"""The frozen, typed :class:`StreamRecord` every DynamoDB Streams record shape decodes into.

Decoding lives in :mod:`worker.decode`. Shapes accepted by :func:`worker.decode.decode` (all auto-detected, per record):

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
``ApproximateCreationDateTime`` is optional in the Streams API (the Lambda
console's test event and libraries' sample events lack it): such a record gets
its arrival time (the decoding time, whole seconds) and ``created_at_is_arrival``.
Sequence numbers are any decimal string (samples use short ones such as
``"111"``); ``eventSourceARN`` may be any text (only a ``:table/`` ARN names the
table).

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
import datetime as dt
import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgspec
import orjson

from worker.attributes import Compare, Item, Numbers, Value, decode_item, decode_value, json_item, walk_raw
from worker.errors import RecordError

__all__ = ["EventName", "RawRecord", "StreamRecord", "ViewType", "json_default", "to_json"]

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
    ``sequence`` is the source's own position of the record (the one its
    checkpoint takes), when it has one: the pipeline reports it durable even
    when the payload does not decode.
    ``replay_sinks`` marks a dead letter being replayed: the names of the sinks that
    parked it (it goes to those only; empty: every sink, for a record no sink saw).
    """

    payload: bytes | str | Mapping[str, Any]
    where: str
    shard_id: str | None = None
    sequence: str | None = None
    replay_sinks: tuple[str, ...] | None = None


@dataclass(frozen=True, eq=False)
class StreamRecord:
    """One change of one item, decoded. Immutable; images decode on first access.

    Decoded keys and images are read-only: once both images are decoded, an
    attribute that did not change is one value shared by both.

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
    created_at_is_arrival: bool = False  # no ApproximateCreationDateTime: created_at is when it was decoded
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
        return None if self._old is None else self._decode_image(0)

    @cached_property
    def new_image(self) -> Item | None:
        """The item after the change; ``None`` when the record has no new image."""
        return None if self._new is None else self._decode_image(1)

    def _decode_image(self, which: int) -> Item:
        other = self.__dict__.get("old_image" if which else "new_image")
        if other and self._text is not None:
            return self._beside(which, other)
        return self._decode(self._image(which), _IMAGE_FIELDS[which])

    def _beside(self, which: int, other: Item) -> Item:
        """One image of a record from text, decoded after the other one: an attribute whose raw
        text is the same in both is the other image's value (shared, hence read-only images),
        the rest is decoded. Most of a MODIFY's attributes do not change."""
        raw = self._raw_images()
        mine, theirs = raw[which], raw[1 - which]
        path = _IMAGE_FIELDS[which]
        return {k: other[k] if theirs.get(k) == av else self._attr(mine, k, path) for k, av in mine.items()}

    @property
    def has_old_image(self) -> bool:
        """Whether the record carries an old image (``{}`` counts as none), without decoding it."""
        return self._old is not None

    @property
    def has_new_image(self) -> bool:
        return self._new is not None

    def select(self, names: Collection[str]) -> tuple[Item | None, Item | None]:
        """Both images restricted to the top-level attributes ``names`` (``None``: no image).

        Only those attributes are decoded, and nothing is cached: what a sink
        that reads a few attributes of each image needs. A record from JSON text
        is scanned once for both images' attribute values, kept raw until picked.
        """
        decoded = self.__dict__
        images: list[Item | None] = []
        raw: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None
        for which, name in enumerate(("old_image", "new_image")):
            if (self._new if which else self._old) is None:
                images.append(None)
                continue
            full = decoded.get(name)
            if full is not None:  # decoded already: pick from it
                images.append({k: full[k] for k in names if k in full})
                continue
            if raw is None:
                raw = self._raw_images()
            attrs = raw[which]
            path = _IMAGE_FIELDS[which]
            images.append({k: self._attr(attrs, k, path) for k in names if k in attrs})
        return images[0], images[1]

    def new_image_json(self, numbers: Numbers = "number") -> dict[str, Any] | None:
        """The new image as JSON-ready values (:func:`~worker.attributes.json_item`), for
        documents; ``None`` when the record has no new image. Not cached."""
        if self._new is None:
            return None
        decoded = self.__dict__.get("new_image")
        if decoded is not None:
            return decoded  # type: ignore[no-any-return]
        try:
            return json_item(self._image(1), "dynamodb.NewImage", numbers)
        except RecordError as exc:
            raise exc.located(self.location, self.original()) from None

    def _raw_images(self) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """Both images' top-level values, undecoded: msgspec.Raw slices of the text when the
        images are still unread (one scan, nothing kept), else the AttributeValue mappings."""
        cached = self.__dict__.get("_attributes")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        if self._old is _UNREAD or self._new is _UNREAD:
            try:
                images = _READ_RAW(self._text).dynamodb  # type: ignore[arg-type]
            except msgspec.DecodeError as exc:
                raise RecordError(f"invalid JSON: {exc}", where=self.location, payload=self.original()) from None
            return images.old or {}, images.new or {}
        return self._old or {}, self._new or {}

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
            try:
                return _READ_IMAGE[which](self._text).dynamodb.image or {}  # type: ignore[arg-type]
            except msgspec.DecodeError as exc:
                raise RecordError(f"invalid JSON: {exc}", where=self.location, payload=self.original()) from None
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

    def original_text(self) -> bytes | str | None:
        """The record's JSON text as delivered, when it was decoded from text (else ``None``)."""
        return self._text

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


# -- lazy images ----------------------------------------------------------------------


_parse_raw = msgspec.json.Decoder().decode


def _load_raw(raw: Any) -> Any:
    """One attribute value kept raw by the fast path, parsed now (a ``RecordError`` if it is bad)."""
    try:
        return _parse_raw(raw)
    except msgspec.DecodeError as exc:
        raise RecordError(f"invalid JSON: {exc}") from None


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


class _RawImages(msgspec.Struct, gc=False, rename={"old": "OldImage", "new": "NewImage"}):
    """Both images' top-level values as raw slices of the text (nothing below them parsed)."""

    old: dict[str, msgspec.Raw] | None = None
    new: dict[str, msgspec.Raw] | None = None


class _RawOf(msgspec.Struct, gc=False):
    dynamodb: _RawImages


_READ_RAW = msgspec.json.Decoder(_RawOf).decode
