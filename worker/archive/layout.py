"""The S3 change archive's format: object names, partitions and lines.

Layout (written by :mod:`worker.sinks.archive`)::

    {prefix}table={table}/dt={YYYY-MM-DD}/hour={HH}/{stream}-{first:040d}.jsonl.gz

* ``table``/``dt``/``hour``: Hive-style partitions by table and event time
  (the record's ``ApproximateCreationDateTime``, UTC). Every record of an
  object lies in its object's hour, so listing the hours of a time range finds
  every record of that range.
* ``stream``: the shard id (``shardId-...``), or ``file-<hash>`` for records
  without one (fixture files), so records of different files never collide.
* ``first``: the object's first sequence number, zero-padded to 40 digits so
  that names sort by it. **Every record of an object has a sequence number
  >= its name's**; a replay relies on it to merge objects lazily.

Each object is gzip (possibly several concatenated members) of JSON Lines; each
line is an envelope holding what the stream record itself lacks and the record
exactly as delivered::

    {"shard_id": "shardId-...", "table": "Orders", "record": {...}}

(``"where": "file:line"`` is added when there is no shard id.)

Objects can overlap: a redelivery after a crash may start an object at another
sequence number than the first delivery did (other batch boundaries), so the
same record can be in two objects. Readers remove duplicates by
``(stream, sequence number)``: :func:`merge` yields each record once, in
sequence order per stream.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from worker.canonical import SEQ_WIDTH, seq_text
from worker.decode import decode_mapping
from worker.errors import RecordError
from worker.records import StreamRecord, json_default

__all__ = [
    "SUFFIX",
    "UTC",
    "ObjectName",
    "encode_line",
    "gunzip",
    "hour_of",
    "parse_key",
    "parse_line",
    "partition",
    "shard_created_ms",
    "stream_of",
]

UTC = dt.UTC
SUFFIX = ".jsonl.gz"
_NAME = re.compile(rf"^(?P<stream>.+)-(?P<first>\d{{{SEQ_WIDTH}}}){re.escape(SUFFIX)}$")
_PARTS = re.compile(r"^table=(?P<table>[^/]+)/dt=(?P<day>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/(?P<name>[^/]+)$")
_SHARD_TIME = re.compile(r"^shardId-(\d{20})-")
_CHUNK = 1 << 16

# -- layout ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ObjectName:
    """What an archive object's key says about it."""

    table: str
    hour: dt.datetime  # UTC, on the hour
    stream: str
    first: int

    def key(self, prefix: str) -> str:
        return f"{partition(prefix, self.table, self.hour)}{self.stream}-{seq_text(self.first)}{SUFFIX}"


def partition(prefix: str, table: str, hour: dt.datetime) -> str:
    return f"{prefix}table={table}/dt={hour:%Y-%m-%d}/hour={hour:%H}/"


def parse_key(key: str, prefix: str) -> ObjectName | None:
    """The name of an archive object, or ``None`` for a key that is not one."""
    if not key.startswith(prefix):
        return None
    parts = _PARTS.match(key[len(prefix) :])
    if not parts:
        return None
    name = _NAME.match(parts["name"])
    if not name:
        return None
    try:
        hour = dt.datetime.strptime(f"{parts['day']} {parts['hour']}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    except ValueError:
        return None
    return ObjectName(parts["table"], hour, name["stream"], int(name["first"]))


def hour_of(when: dt.datetime) -> dt.datetime:
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def stream_of(record: StreamRecord) -> str:
    """The shard id, or for shard-less records (fixture files) ``file-<hash of the file>``."""
    if record.shard_id:
        return record.shard_id
    source = re.sub(r"(:\d+)?(#.*)?$", "", record.where)
    return "file-" + hashlib.sha1(source.encode()).hexdigest()[:16]


def encode_line(record: StreamRecord, table: str) -> bytes:
    """One archive line: the record exactly as delivered, in its envelope.

    Text that is one clean line of UTF-8 JSON goes in verbatim (it was parsed when
    the record was decoded); anything else is parsed and written again.
    """
    text = record.original_text()
    original: Any = orjson.Fragment(text) if text is not None and _verbatim(text) else record.original()
    env: dict[str, Any] = {"shard_id": record.shard_id, "table": table, "record": original}
    if record.shard_id is None:
        env["where"] = record.where
    if record.created_at_is_arrival:  # no ApproximateCreationDateTime: filed by the hour it arrived
        env["filed_by"] = "arrival"
        env["arrived_at"] = record.created_at.isoformat()
    try:
        return orjson.dumps(env, default=json_default)
    except TypeError as exc:
        if "recursion" not in str(exc).lower():
            raise RecordError(f"cannot archive the record: {exc}", where=record.location) from None
    # Nested deeper than orjson writes (255 levels): the standard library writes it
    # (readers parse it: orjson reads 1,024 levels), so a deep record is kept, not parked.
    try:
        text = json.dumps(env, default=json_default, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        raise RecordError(f"cannot archive the record: {exc}", where=record.location) from None


def _verbatim(text: bytes | str) -> bool:
    """JSON text that can sit inside a line as is: bytes, no line breaks, no ``\\u`` escapes
    (a lone surrogate would make the line unreadable), valid UTF-8."""
    if type(text) is not bytes or b"\n" in text or b"\r" in text or b"\\u" in text:
        return False
    if text.isascii():
        return True
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def shard_created_ms(stream: str) -> int | None:
    """The creation time (epoch ms) DynamoDB embeds in its shard ids, if this is one."""
    m = _SHARD_TIME.match(stream)
    return int(m.group(1)) if m else None


# -- lines ---------------------------------------------------------------------------


def gunzip(data: bytes) -> tuple[bytes, str | None]:
    """Decompress every gzip member; on damage, what came before it and the reason.

    Input is fed in chunks so that data before a corrupt spot is kept.
    """
    out: list[bytes] = []
    rest = data
    while rest:
        if rest[:2] != b"\x1f\x8b":
            return b"".join(out), f"{len(rest)} trailing bytes that are not gzip"
        d = zlib.decompressobj(wbits=31)
        pos = 0
        try:
            while pos < len(rest) and not d.eof:
                out.append(d.decompress(rest[pos : pos + _CHUNK]))
                pos += _CHUNK
        except zlib.error as exc:
            return b"".join(out), f"invalid gzip data: {exc}"
        if not d.eof:
            out.append(d.flush())
            return b"".join(out), "truncated gzip data (the object ends inside a member)"
        rest = d.unused_data + rest[pos:]  # the next member starts inside the last chunk fed
    return b"".join(out), None


def parse_line(line: bytes, where: str) -> StreamRecord:
    """One archive line as a decoded record; a :class:`RecordError` at ``where`` if it is not one."""
    try:
        env = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON: {exc}", where=where, payload=line.decode("utf-8", "replace")) from None
    if not isinstance(env, dict) or not isinstance(env.get("record"), Mapping):
        raise RecordError("not an archive line (no 'record' object)", where=where, payload=env)
    shard = env.get("shard_id")
    try:
        record = decode_mapping(env["record"], where=where, shard_id=shard if isinstance(shard, str) else None)
    except RecordError as exc:
        raise RecordError(exc.reason, where=where, field=exc.field, payload=env["record"]) from None
    arrived = env.get("arrived_at")
    if record.created_at_is_arrival and isinstance(arrived, str):  # its time is when it first arrived
        try:
            when = dt.datetime.fromisoformat(arrived)
        except ValueError:
            return record
        return dataclasses.replace(record, created_at=when)
    return record
