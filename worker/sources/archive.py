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

import dataclasses
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
    if record.created_at_is_arrival:  # no ApproximateCreationDateTime: filed by the hour it arrived
        env["filed_by"] = "arrival"
        env["arrived_at"] = record.created_at.isoformat()
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
    from worker.aws import missing_credentials, retry_after

    if missing_credentials(exc):
        return FatalError(f"{what}: no AWS credentials ({exc})")
    code = error_code(exc)
    if code in _FATAL_CODES:
        return FatalError(f"{what}: {code}: {exc}")
    return RetryableError(f"{what}: {exc}", retry_after=retry_after(exc))


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


def _subdirs(s3: Any, bucket: str, under: str) -> list[str]:
    """The "directories" right below ``under`` (common prefixes), without ``under`` and the slash."""
    out: list[str] = []
    try:
        for page in _pages(s3, Bucket=bucket, Prefix=under, Delimiter="/"):
            out.extend(cp["Prefix"][len(under) :].rstrip("/") for cp in page.get("CommonPrefixes", []))
    except Exception as exc:
        raise classify(exc, f"list s3://{bucket}/{under}") from exc
    return sorted(out)


def list_tables(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The tables that have a partition under ``prefix``."""
    return [d[len("table=") :] for d in _subdirs(s3, bucket, prefix) if d.startswith("table=")]


def list_objects(
    s3: Any,
    bucket: str,
    prefix: str,
    tables: Sequence[str],
    *,
    since: dt.datetime,
    until: dt.datetime,
    ignored: Callable[[str], None] | None = None,
) -> list[ArchivedObject]:
    """Every archive object of ``tables`` whose hour overlaps ``[since, until)``.

    Partition pruning: lists the day partitions of each table (one request per
    1,000 days), then only the days in range, keeping the hours in range. Keys
    in those partitions that are not archive objects are passed to ``ignored``
    (the caller reports them), never silently dropped.
    """
    first_hour, out = hour_of(since), []
    first_day = first_hour.date()
    for table in tables:
        base = f"{prefix}table={table}/"
        for sub in _subdirs(s3, bucket, base):
            try:
                day = dt.datetime.strptime(sub, "dt=%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                if ignored:
                    ignored(f"{base}{sub}/")
                continue
            if day.date() < first_day or day >= until:
                continue
            part = f"{base}{sub}/"
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


Entry = tuple[int, int, bytes]  # (sequence number, line number, the line): a record not yet decoded


@dataclass(frozen=True)
class Loaded:
    """One object, read: its lines sorted by sequence number, and what was wrong with the rest.

    Lines stay undecoded until the merge yields them: decoded records cost ~10x
    their JSON in memory (and in garbage-collector passes), and an object can
    hold 64 MB of JSON; only the records between two flushes are ever decoded.
    """

    obj: ArchivedObject
    etag: str  # of the version read (the object may have grown since it was listed)
    entries: list[Entry]
    errors: list[RecordError]
    lines: int
    source: str  # s3://bucket/key


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


_SEQ = re.compile(rb'"SequenceNumber":"(\d+)"')


def parse_object(data: bytes, bucket: str, key: str) -> tuple[list[Entry], list[RecordError], int]:
    """Entries (sorted by sequence number), errors (each with ``s3://bucket/key:line``), line count.

    Only the sequence number is read here (a pattern over the line: unescaped,
    ``"SequenceNumber":"<digits>"`` can only be the record's own key, since
    attribute maps hold objects; a line where it is not found exactly once is
    parsed instead). Full decoding, and its errors, come when the line is used.
    """
    text, damage = gunzip(data)
    lines = text.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" unless the data was cut inside a line
    entries: list[Entry] = []
    errors: list[RecordError] = []
    base = f"s3://{bucket}/{key}"
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        found = _SEQ.findall(line)
        if len(found) == 1:
            entries.append((int(found[0]), n, line))
            continue
        try:
            entries.append((parse_line(line, f"{base}:{n}").sequence, n, line))
        except RecordError as exc:
            errors.append(exc)
    count = len(lines)
    if damage or tail:
        count += 1
        reason = damage or "the last line has no newline (truncated object)"
        errors.append(RecordError(reason, where=f"{base}:{count}", payload=tail.decode("utf-8", "replace")))
    elif not data:
        errors.append(RecordError("empty object", where=f"{base}:1", payload=""))
    entries.sort(key=_first)
    return entries, errors, count


def _first(entry: Entry) -> int:
    return entry[0]


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


def read_object(s3: Any, bucket: str, obj: ArchivedObject) -> Loaded:
    """GET and parse one object. A vanished object raises ``RecordError``; S3 trouble retries or stops."""
    try:
        resp = s3.get_object(Bucket=bucket, Key=obj.key)
        data = resp["Body"].read()
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            err = RecordError("object vanished between listing and reading", where=f"s3://{bucket}/{obj.key}:0")
            return Loaded(obj, obj.etag, [], [err], 0, f"s3://{bucket}/{obj.key}")
        raise classify(exc, f"get s3://{bucket}/{obj.key}") from exc
    entries, errors, lines = parse_object(data, bucket, obj.key)
    return Loaded(obj, str(resp.get("ETag", obj.etag)), entries, errors, lines, f"s3://{bucket}/{obj.key}")


class Prefetcher:
    """Loads objects ahead, on threads, in the order they will be asked for.

    ``get`` must be called in ``plan`` order (the order :func:`merge` loads
    them); at most ``window`` loaded objects wait in memory.
    """

    def __init__(
        self, plan: Sequence[ArchivedObject], load: Callable[[ArchivedObject], Loaded], window: int = 4
    ) -> None:
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


Event = StreamRecord | RecordError | Opened | Finished


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


def merge(
    objects: Sequence[ArchivedObject], load: Callable[[ArchivedObject], Loaded], stats: MergeStats
) -> Iterator[Event]:
    """Records of one stream's objects (sorted by first sequence), each once, in sequence order.

    A k-way merge that opens an object only when no record before its first
    sequence number is left, so memory holds only objects whose ranges
    overlap. Copies of one record are adjacent in the merged order: the first
    that decodes is yielded, the others are counted as duplicates. A line that
    does not decode is yielded as a :class:`RecordError` (with its place), and
    a good copy elsewhere still replaces it.
    """
    heap: list[tuple[int, int, int]] = []  # (sequence, object index, entry index)
    opened: dict[int, Loaded] = {}
    remaining: dict[int, int] = {}
    nxt = 0
    last: int | None = None  # sequence number of the last record yielded
    while heap or nxt < len(objects):
        if nxt < len(objects) and (not heap or heap[0][0] >= objects[nxt].name.first):
            loaded = load(objects[nxt])
            yield Opened(loaded)
            first = objects[nxt].name.first
            stats.misplaced.extend(f"{loaded.source}:{n}" for seq, n, _ in loaded.entries if seq < first)
            if loaded.entries:
                opened[nxt], remaining[nxt] = loaded, len(loaded.entries)
                heapq.heappush(heap, (loaded.entries[0][0], nxt, 0))
            else:
                yield Finished(loaded.obj, loaded.etag)
            nxt += 1
            continue
        seq, i, j = heapq.heappop(heap)
        loaded = opened[i]
        _, n, line = loaded.entries[j]
        try:
            record = parse_line(line, f"{loaded.source}:{n}")
            if record.sequence != seq:
                raise RecordError(
                    f"the line's sequence number {record.sequence} is not the one found in it ({seq})",
                    where=f"{loaded.source}:{n}",
                    field="dynamodb.SequenceNumber",
                    payload=line.decode("utf-8", "replace"),
                )
        except RecordError as exc:
            yield exc
        else:
            if seq == last:
                stats.duplicates += 1
            else:
                last = seq
                yield record
        remaining[i] -= 1
        if j + 1 < len(loaded.entries):
            heapq.heappush(heap, (loaded.entries[j + 1][0], i, j + 1))
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
            elif isinstance(ev, RecordError):
                errors.append(ev)
            elif isinstance(ev, Opened):
                errors.extend(ev.loaded.errors)
    return len(objects), records, errors
