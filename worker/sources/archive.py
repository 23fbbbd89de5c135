"""The S3 change archive: its layout, and reading it back for replays.

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

import datetime as dt
import hashlib
import heapq
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.errors import FatalError, RecordError, RetryableError, WorkerError
from worker.records import StreamRecord, decode_mapping, json_default

UTC = dt.UTC
SUFFIX = ".jsonl.gz"
SEQ_WIDTH = 40
_HOUR = dt.timedelta(hours=1)
_NAME = re.compile(r"^(?P<stream>.+)-(?P<first>\d{%d})%s$" % (SEQ_WIDTH, re.escape(SUFFIX)))
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
        return f"{partition(prefix, self.table, self.hour)}{self.stream}-{self.first:0{SEQ_WIDTH}d}{SUFFIX}"


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
    """One archive line: the record exactly as delivered, in its envelope."""
    env: dict[str, Any] = {"shard_id": record.shard_id, "table": table, "record": record.original()}
    if record.shard_id is None:
        env["where"] = record.where
    try:
        return orjson.dumps(env, default=json_default)
    except TypeError as exc:
        raise RecordError(f"cannot archive the record: {exc}", where=record.location) from None


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix/``)."""
    if not url.startswith("s3://") or len(url) <= len("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def shard_created_ms(stream: str) -> int | None:
    """The creation time (epoch ms) DynamoDB embeds in its shard ids, if this is one."""
    m = _SHARD_TIME.match(stream)
    return int(m.group(1)) if m else None


# -- S3 errors ------------------------------------------------------------------------

_FATAL_CODES = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def classify(exc: Exception, what: str) -> WorkerError:
    """A botocore error as the worker's error: missing bucket or no permission stops, the rest retries."""
    code = error_code(exc)
    if code in _FATAL_CODES:
        return FatalError(f"{what}: {code}: {exc}")
    return RetryableError(f"{what}: {exc}")


# -- listing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchivedObject:
    name: ObjectName
    key: str
    size: int
    etag: str


def _pages(s3: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    token: str | None = None
    while True:
        args = dict(kwargs, ContinuationToken=token) if token else kwargs
        page = s3.list_objects_v2(**args)
        yield page
        if not page.get("IsTruncated"):
            return
        token = page["NextContinuationToken"]


def list_tables(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The tables that have a partition under ``prefix``."""
    out = []
    try:
        for page in _pages(s3, Bucket=bucket, Prefix=f"{prefix}table=", Delimiter="/"):
            for cp in page.get("CommonPrefixes", []):
                out.append(cp["Prefix"][len(prefix) + len("table=") :].rstrip("/"))
    except Exception as exc:
        raise classify(exc, f"list s3://{bucket}/{prefix}") from exc
    return sorted(out)


def list_objects(
    s3: Any,
    bucket: str,
    prefix: str,
    tables: Sequence[str],
    since: dt.datetime,
    until: dt.datetime,
    *,
    ignored: Callable[[str], None] | None = None,
) -> list[ArchivedObject]:
    """Every archive object of ``tables`` whose hour overlaps ``[since, until)``.

    Lists one day partition at a time and keeps the hours in range (partition
    pruning). Keys in those partitions that are not archive objects are passed
    to ``ignored`` (the caller reports them), never silently dropped.
    """
    first_hour, out = hour_of(since), []
    for table in tables:
        day = first_hour.replace(hour=0)
        while day < until:
            part = f"{prefix}table={table}/dt={day:%Y-%m-%d}/"
            try:
                for page in _pages(s3, Bucket=bucket, Prefix=part):
                    for obj in page.get("Contents", []):
                        key = obj["Key"]
                        name = parse_key(key, prefix)
                        if name is None:
                            if ignored:
                                ignored(key)
                            continue
                        if first_hour <= name.hour < until:
                            out.append(ArchivedObject(name, key, int(obj["Size"]), str(obj["ETag"])))
            except Exception as exc:
                raise classify(exc, f"list s3://{bucket}/{part}") from exc
            day += dt.timedelta(days=1)
    return out


def list_all(s3: Any, bucket: str, prefix: str) -> list[ArchivedObject]:
    """Every archive object under ``prefix`` (reports, tests)."""
    out = []
    try:
        for page in _pages(s3, Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = parse_key(obj["Key"], prefix)
                if name is not None:
                    out.append(ArchivedObject(name, obj["Key"], int(obj["Size"]), str(obj["ETag"])))
    except Exception as exc:
        raise classify(exc, f"list s3://{bucket}/{prefix}") from exc
    return out


# -- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """One object, read: its good records sorted by sequence number, and what was wrong with the rest."""

    obj: ArchivedObject
    etag: str  # of the version read (the object may have grown since it was listed)
    records: list[StreamRecord]
    errors: list[RecordError]
    lines: int


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
        rest = d.unused_data
    return b"".join(out), None


def parse_object(data: bytes, bucket: str, key: str) -> tuple[list[StreamRecord], list[RecordError], int]:
    """Records (in file order), errors (each with ``s3://bucket/key:line``) and the line count."""
    text, damage = gunzip(data)
    lines = text.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" unless the data was cut inside a line
    records: list[StreamRecord] = []
    errors: list[RecordError] = []
    base = f"s3://{bucket}/{key}"
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(parse_line(line, f"{base}:{n}"))
        except RecordError as exc:
            errors.append(exc)
    count = len(lines)
    if damage or tail:
        count += 1
        reason = damage or "the last line has no newline (truncated object)"
        errors.append(RecordError(reason, where=f"{base}:{count}", payload=tail.decode("utf-8", "replace")))
    elif not data:
        errors.append(RecordError("empty object", where=f"{base}:1", payload=""))
    return records, errors, count


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
        return decode_mapping(env["record"], where=where, shard_id=shard if isinstance(shard, str) else None)
    except RecordError as exc:
        raise RecordError(exc.reason, where=where, field=exc.field, payload=env["record"]) from None


def read_object(s3: Any, bucket: str, obj: ArchivedObject) -> Loaded:
    """GET and parse one object. A vanished object raises ``RecordError``; S3 trouble retries or stops."""
    try:
        resp = s3.get_object(Bucket=bucket, Key=obj.key)
        data = resp["Body"].read()
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            err = RecordError("object vanished between listing and reading", where=f"s3://{bucket}/{obj.key}:0")
            return Loaded(obj, obj.etag, [], [err], 0)
        raise classify(exc, f"get s3://{bucket}/{obj.key}") from exc
    records, errors, lines = parse_object(data, bucket, obj.key)
    records.sort(key=_seq)
    return Loaded(obj, str(resp.get("ETag", obj.etag)), records, errors, lines)


def _seq(record: StreamRecord) -> int:
    return record.sequence


class Prefetcher:
    """Loads objects ahead, on threads, in the order they will be asked for.

    ``get`` must be called in ``plan`` order (the order :func:`merge` loads
    them); at most ``window`` loaded objects wait in memory.
    """

    def __init__(self, plan: Sequence[ArchivedObject], load: Callable[[ArchivedObject], Loaded], window: int = 4) -> None:
        self.plan = list(plan)
        self.load = load
        self.window = max(1, window)
        self.pool = ThreadPoolExecutor(max_workers=self.window, thread_name_prefix="archive-read")
        self.futures: dict[str, Future[Loaded]] = {}
        self.next = 0
        self.lock = threading.Lock()

    def get(self, obj: ArchivedObject) -> Loaded:
        with self.lock:
            while self.next < len(self.plan) and len(self.futures) < self.window:
                ahead = self.plan[self.next]
                self.futures[ahead.key] = self.pool.submit(self.load, ahead)
                self.next += 1
            fut = self.futures.pop(obj.key, None)
        return fut.result() if fut is not None else self.load(obj)

    def close(self) -> None:
        for fut in self.futures.values():
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


# -- merging ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """An object was read (emitted before its records); ``loaded.errors`` are its damaged lines."""

    loaded: Loaded


@dataclass(frozen=True)
class Finished:
    """Every record of this object has been yielded (or was a duplicate)."""

    obj: ArchivedObject
    etag: str


@dataclass
class MergeStats:
    duplicates: int = 0
    misplaced: list[str] = field(default_factory=list)  # records below their object's first sequence


Event = StreamRecord | Opened | Finished


def plan(objects: Iterable[ArchivedObject]) -> list[tuple[tuple[str, str], list[ArchivedObject]]]:
    """Objects grouped by (table, stream), groups in replay order, each group sorted by first sequence.

    Parents before children: DynamoDB embeds a shard's creation time in its id
    and a child is always created after its parent, so groups are ordered by
    that time (then by their first sequence number, for ids without one). Each
    group is replayed completely before the next starts.
    """
    groups: dict[tuple[str, str], list[ArchivedObject]] = {}
    for obj in objects:
        groups.setdefault((obj.name.table, obj.name.stream), []).append(obj)
    for objs in groups.values():
        objs.sort(key=lambda o: (o.name.first, o.name.hour, o.key))

    def order(item: tuple[tuple[str, str], list[ArchivedObject]]) -> tuple[str, int, int, str]:
        (table, stream), objs = item
        return (table, shard_created_ms(stream) or 0, objs[0].name.first, stream)

    return sorted(groups.items(), key=order)


def merge(objects: Sequence[ArchivedObject], load: Callable[[ArchivedObject], Loaded], stats: MergeStats) -> Iterator[Event]:
    """Records of one stream's objects (sorted by first sequence), each once, in sequence order.

    A k-way merge that opens an object only when no record before its first
    sequence number is left, so memory holds only objects whose ranges
    overlap. Duplicates are adjacent in the merged order and dropped.
    """
    heap: list[tuple[int, int, int]] = []  # (sequence, object index, record index)
    opened: dict[int, Loaded] = {}
    remaining: dict[int, int] = {}
    nxt = 0
    last: int | None = None
    while heap or nxt < len(objects):
        if nxt < len(objects) and (not heap or heap[0][0] >= objects[nxt].name.first):
            loaded = load(objects[nxt])
            yield Opened(loaded)
            for rec in loaded.records:
                if rec.sequence < objects[nxt].name.first:
                    stats.misplaced.append(f"{rec.where} ({rec.location})")
            if loaded.records:
                opened[nxt], remaining[nxt] = loaded, len(loaded.records)
                heapq.heappush(heap, (loaded.records[0].sequence, nxt, 0))
            else:
                yield Finished(loaded.obj, loaded.etag)
            nxt += 1
            continue
        seq, i, j = heapq.heappop(heap)
        loaded = opened[i]
        if seq == last:
            stats.duplicates += 1
        else:
            last = seq
            yield loaded.records[j]
        remaining[i] -= 1
        if j + 1 < len(loaded.records):
            heapq.heappush(heap, (loaded.records[j + 1].sequence, i, j + 1))
        if not remaining[i]:
            del opened[i], remaining[i]
            yield Finished(loaded.obj, loaded.etag)


def read_all(s3: Any, bucket: str, prefix: str) -> tuple[int, list[StreamRecord], list[RecordError]]:
    """Every object under ``prefix``: (objects, unique records in replay order, damaged lines)."""
    objects = list_all(s3, bucket, prefix)
    records: list[StreamRecord] = []
    errors: list[RecordError] = []
    stats = MergeStats()
    for _, objs in plan(objects):
        for ev in merge(objs, lambda o: read_object(s3, bucket, o), stats):
            if isinstance(ev, StreamRecord):
                records.append(ev)
            elif isinstance(ev, Opened):
                errors.extend(ev.loaded.errors)
    return len(objects), records, errors
