"""The archive sink: every raw stream record, losslessly, as gzip JSON Lines in S3.

Layout and line format: :mod:`worker.archive.layout`. Every change is
archived (no-ops and TTL expirations too), as the record was delivered.

Durability and cadence (the checkpoint never passes a record whose object is
not durable): **each object is written once**, when it rotates
(``max_records``, ``max_bytes`` of uncompressed JSON, ``max_age_seconds``),
with one PUT of its whole gzip body; nothing is ever appended or rewritten.
The sink is :class:`~worker.sinks.Cadenced`: ``due``/``flush_ready`` write
rotated objects, ``unflushed`` tells the pipeline how many of its newest
records are still in open objects (the pipeline's checkpoint stays behind
them), and ``flush()`` (shutdown, shard end, end of a replay) rotates and
writes every open object. Worst-case freshness: a record reaches S3 at most
``max_age_seconds`` after its object opened (checked as records arrive and at
every commit tick), and is checkpointed at most ``[pipeline] commit_interval``
later.

Idempotence and conflicts: names are deterministic (table, hour, shard, first
sequence number), so a retried flush or a redelivered batch with the same
boundaries writes its own object again. **An object's records only ever grow**:
the write of a name is conditional on its absence (``If-None-Match: *``).
When that fails (a crash and restart from an older checkpoint, a retried
PUT whose answer was lost, a zombie owner of the lease still flushing), the
sink reads the object, merges it with its own records (union by sequence
number) and writes the union conditionally again. So no interleaving of
writers can drop an acknowledged record. Redeliveries with other batch
boundaries start objects at other sequence numbers and so overlap older
objects: readers remove duplicates by (shard, sequence number).

``conditional_writes = false`` (for S3-compatible stores without them) falls
back to plain overwrites: still correct when one writer owns a shard at a
time, but a zombie could then replace an object with fewer records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from isal import igzip, isal_zlib

from worker.archive.layout import (
    ObjectName,
    encode_line,
    gunzip,
    hour_of,
    stream_of,
)
from worker.archive.merge import read_all
from worker.log import get_logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.config import Config
from worker.aws import classify_s3, ensure_bucket, error_code
from worker.diff import Change
from worker.errors import FatalError, RecordError, RetryableError

__all__ = ["EMULATORS", "NAME", "REPLAY_DEFAULT", "ArchiveSink", "build", "create", "enabled", "render"]

NAME = "archive"
REPLAY_DEFAULT = False  # a replay reads the archive; it writes it again only when named
EMULATORS = frozenset({"aws"})

_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING = {"NoSuchKey", "404"}
_MERGE_ATTEMPTS = 5
_GZIP_WBITS = 31  # zlib's convention: 16 + 15, a gzip header and trailer


@dataclass
class _Object:
    """One object not yet written, written once at rotation.

    Its lines are compressed as they are added (``compressed``; the buffer holds about a
    seventh of the JSON), and the body is finished once (``body``), so a retried
    write sends the same bytes.
    """

    name: ObjectName
    key: str
    opened: float
    first_add: int  # the sink's add count at its first record
    level: int
    size: int = 0  # uncompressed bytes
    last: int = -1  # highest sequence number added
    count: int = 0  # records added
    compressed: bytearray = field(default_factory=bytearray)  # one buffer, not a small object per line
    body: bytes | None = None
    _gzip: Any = None

    def append(self, line: bytes) -> None:
        if self._gzip is None:
            self._gzip = isal_zlib.compressobj(self.level, isal_zlib.DEFLATED, _GZIP_WBITS)
        self.compressed += self._gzip.compress(line + b"\n")
        self.count += 1
        self.size += len(line) + 1

    def finish(self) -> bytes:
        """The gzip body (one member), made once."""
        if self.body is None:
            if self._gzip is not None:
                self.compressed += self._gzip.flush()
            self.body, self.compressed, self._gzip = bytes(self.compressed), bytearray(), None
        return self.body


class ArchiveSink:
    """Buffers records per (table, hour, shard) object; ``flush`` makes them durable in S3."""

    name = NAME

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        prefix: str,
        *,
        table: str,
        max_records: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_age_seconds: float = 300.0,
        conditional_writes: bool = True,
        compress_level: int = 2,
        clock: Callable[[], float] = time.monotonic,
        log: Any = None,
    ) -> None:
        self.s3, self.bucket, self.prefix, self.table = s3, bucket, prefix, table
        self.max_records, self.max_bytes, self.max_age = max_records, max_bytes, max_age_seconds
        self.conditional = conditional_writes
        self.level = compress_level
        self.clock = clock
        self.log = log or get_logger("worker.sinks.archive")
        self.open: dict[tuple[str, str, Any], _Object] = {}  # (table, stream, hour) -> object
        self.closing: list[_Object] = []  # rotated, with records not yet written
        self.adds = 0  # add calls so far (see unflushed)
        self.bytes_put = 0  # bytes uploaded (merges included)
        self.puts = 0
        self.conflicts = 0  # conditional writes that found another version
        self.merges = 0  # ... and wrote the union

    # -- Sink ----------------------------------------------------------------------

    def add(self, change: Change) -> None:
        self.adds += 1
        record = change.record
        table = record.table or self.table
        line = encode_line(record, table)
        stream = stream_of(record)
        hour = hour_of(record.created_at)
        slot = (table, stream, hour)
        obj = self.open.get(slot)
        seq = record.sequence
        if obj is not None and self._must_rotate(obj, seq, len(line)):
            del self.open[slot]
            if obj.count:
                self.closing.append(obj)
            obj = None
        if obj is None:
            name = ObjectName(table, hour, stream, seq)
            obj = _Object(name, name.key(self.prefix), self.clock(), self.adds, self.level)
            self.open[slot] = obj
        obj.append(line)
        obj.last = seq

    def _must_rotate(self, obj: _Object, seq: int, size: int) -> bool:
        if seq <= obj.last:
            # Only after a redelivery inside one sink (the stream itself is ordered):
            # a new object keeps every object's records above its name's sequence.
            return True
        return (
            obj.count >= self.max_records
            or obj.size + size + 1 > self.max_bytes
            or self.clock() - obj.opened >= self.max_age
        )

    def due(self, now: float) -> bool:
        """A rotated object waits, or an open one has reached ``max_age_seconds``."""
        return bool(self.closing) or any(now - obj.opened >= self.max_age for obj in self.open.values())

    def flush_ready(self) -> Sequence[RecordError]:
        """Rotate aged objects and write every rotated one (each once).

        On a RetryableError the objects already written are gone from the
        buffer and the rest stay: calling it again finishes the job.
        """
        now = self.clock()
        for slot, obj in list(self.open.items()):
            if now - obj.opened >= self.max_age:
                del self.open[slot]
                self.closing.append(obj)
        self._write_closing()
        return ()

    def flush(self) -> Sequence[RecordError]:
        """Rotate and write every object (shutdown, shard end, end of a replay)."""
        self.closing.extend(self.open.values())
        self.open.clear()
        self._write_closing()
        return ()

    def unflushed(self) -> int:
        """How many of the newest adds are not durable (from the oldest unwritten object's first)."""
        firsts = [obj.first_add for obj in self.closing] + [obj.first_add for obj in self.open.values()]
        return self.adds - min(firsts) + 1 if firsts else 0

    def _write_closing(self) -> None:
        while self.closing:
            self._write(self.closing[0])
            self.closing.pop(0)

    def close(self) -> None:
        self.open.clear()
        self.closing.clear()

    def report(self) -> Any:
        """What the archive holds under the prefix: objects and unique records."""
        objects, records, _ = read_all(self.s3, self.bucket, self.prefix)
        return {"objects": objects, "records": len(records)}

    # -- writing -------------------------------------------------------------------

    def _write(self, obj: _Object) -> None:
        """One conditional PUT of the whole object; a conflict merges with what is there."""
        if obj.count:
            body = obj.finish()
            if self._put(obj.key, body, None) is None:  # someone else wrote this name: merge
                self.conflicts += 1
                self._merge(obj, _lines(body, obj.key))
        obj.count = 0

    def _put(self, key: str, body: bytes, etag: str | None) -> str | None:
        """PUT conditionally; the new ETag, or ``None`` when the condition failed."""
        # No Content-Encoding: the object *is* a .gz file; HTTP clients must not unpack it on the way.
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body, "ContentType": "application/gzip"}
        if self.conditional:
            if etag is None:
                kwargs["IfNoneMatch"] = "*"
            else:
                kwargs["IfMatch"] = etag
        try:
            resp = self.s3.put_object(**kwargs)
        except Exception as exc:
            code = error_code(exc)
            if code in _CONFLICT or (etag is not None and code in _MISSING):
                return None
            raise classify_s3(exc, f"archive: put s3://{self.bucket}/{key}") from exc
        self.puts += 1
        self.bytes_put += len(body)
        return str(resp.get("ETag", ""))

    def _merge(self, obj: _Object, new: list[tuple[int, bytes]]) -> tuple[bytes, str, set[int]]:
        """Union of the object in S3 and ours (durable and new), written on the version read.

        Returns the body now in S3, its ETag and its sequence numbers.
        """
        mine = dict(new)
        for _ in range(_MERGE_ATTEMPTS):
            data, etag = self._get(obj.key)
            theirs = dict(_lines(data, obj.key)) if etag is not None else {}
            if etag is not None and mine.keys() <= theirs.keys():
                self.log.info("archive object already holds these records", key=obj.key, records=len(theirs))
                return data, etag, set(theirs)
            union = {**theirs, **mine}
            lines = b"".join(line + b"\n" for _, line in sorted(union.items()))
            body = igzip.compress(lines, compresslevel=self.level, mtime=0)
            put = self._put(obj.key, body, etag)
            if put is not None:
                self.merges += 1
                self.log.warning(
                    "archive object merged with another writer's version",
                    key=obj.key,
                    theirs=len(theirs),
                    ours=len(mine),
                    union=len(union),
                )
                return body, put, set(union)
        raise RetryableError(f"archive: s3://{self.bucket}/{obj.key} keeps changing under concurrent writers")

    def _get(self, key: str) -> tuple[bytes, str | None]:
        """The object's bytes and ETag; ``(b"", None)`` when it does not exist."""
        try:
            resp = self.s3.get_object(Bucket=self.bucket, Key=key)
            return resp["Body"].read(), str(resp["ETag"])
        except Exception as exc:
            if error_code(exc) in _MISSING:
                return b"", None
            raise classify_s3(exc, f"archive: get s3://{self.bucket}/{key}") from exc


def _lines(body: bytes, key: str) -> list[tuple[int, bytes]]:
    """(sequence, line) of an archive object's bytes; a damaged object stops the worker.

    Never overwrite what cannot be read: the operator must look at it first.
    """
    if not body:
        return []
    text, damage = gunzip(body)
    if damage:
        raise FatalError(f"archive: {key} is damaged ({damage}); refusing to overwrite it")
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        try:
            seq = int(orjson.loads(line)["record"]["dynamodb"]["SequenceNumber"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise FatalError(f"archive: {key}:{n} is not an archive line; refusing to overwrite the object") from None
        out.append((seq, line))
    return out


def enabled(cfg: Config) -> bool:
    return cfg.archive is not None


def render(report: Any) -> list[str]:
    """Objects and unique records under the prefix."""
    return ["    " + ", ".join(f"{k} {v}" for k, v in report.items())]


def create(cfg: Config, *, provision: bool = False) -> ArchiveSink:
    """The sink of ``[archive]`` (the registry's entry point); see :func:`build`."""
    return build(cfg, provision=provision)


def build(
    cfg: Config, *, provision: bool = False, s3: S3Client | None = None, clock: Callable[[], float] | None = None
) -> ArchiveSink:
    """The sink of ``[archive]`` with an injected client or clock; ``provision`` creates the bucket."""
    a = cfg.archive
    if a is None:
        raise FatalError("archive: no [archive] section")
    if not cfg.worker.table:
        from worker.errors import ConfigError

        raise ConfigError("worker.table", "required with [archive]: objects are partitioned by the source table")
    if s3 is None:
        from worker.aws import client

        s3 = client(cfg, "s3")
    if provision:
        ensure_bucket(s3, a.bucket)
    return ArchiveSink(
        s3,
        a.bucket,
        a.prefix,
        table=cfg.worker.table,
        max_records=a.max_records,
        max_bytes=a.max_bytes,
        max_age_seconds=a.max_age_seconds,
        conditional_writes=a.conditional_writes,
        compress_level=a.compress_level,
        clock=clock or time.monotonic,
    )
