"""Listing and reading archive objects (the format: :mod:`worker.archive.layout`)."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.archive.layout import UTC, ObjectName, gunzip, hour_of, parse_key, parse_line
from worker.aws import classify_s3, error_code
from worker.errors import RecordError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ListObjectsV2OutputTypeDef

    pass

__all__ = [
    "ArchivedObject",
    "Entry",
    "Loaded",
    "Prefetcher",
    "list_all",
    "list_objects",
    "list_tables",
    "parse_object",
    "read_object",
]

# -- listing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchivedObject:
    name: ObjectName
    key: str
    size: int
    etag: str


def _pages(s3: S3Client, **kwargs: Any) -> Iterator[ListObjectsV2OutputTypeDef]:
    token: str | None = None
    while True:
        args = dict(kwargs, ContinuationToken=token) if token else kwargs
        page = s3.list_objects_v2(**args)
        yield page
        if not page.get("IsTruncated"):
            return
        token = page["NextContinuationToken"]


def _subdirs(s3: S3Client, bucket: str, under: str) -> list[str]:
    """The "directories" right below ``under`` (common prefixes), without ``under`` and the slash."""
    out: list[str] = []
    try:
        for page in _pages(s3, Bucket=bucket, Prefix=under, Delimiter="/"):
            out.extend(cp["Prefix"][len(under) :].rstrip("/") for cp in page.get("CommonPrefixes", []))
    except Exception as exc:
        raise classify_s3(exc, f"list s3://{bucket}/{under}") from exc
    return sorted(out)


def list_tables(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    """The tables that have a partition under ``prefix``."""
    return [d[len("table=") :] for d in _subdirs(s3, bucket, prefix) if d.startswith("table=")]


def list_objects(
    s3: S3Client,
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
                raise classify_s3(exc, f"list s3://{bucket}/{part}") from exc
    return out


def list_all(s3: S3Client, bucket: str, prefix: str) -> list[ArchivedObject]:
    """Every archive object under ``prefix`` (reports, tests)."""
    out = []
    try:
        for page in _pages(s3, Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = parse_key(obj["Key"], prefix)
                if name is not None:
                    out.append(ArchivedObject(name, obj["Key"], int(obj["Size"]), str(obj["ETag"])))
    except Exception as exc:
        raise classify_s3(exc, f"list s3://{bucket}/{prefix}") from exc
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


def read_object(s3: S3Client, bucket: str, obj: ArchivedObject) -> Loaded:
    """GET and parse one object. A vanished object raises ``RecordError``; S3 trouble retries or stops."""
    try:
        resp = s3.get_object(Bucket=bucket, Key=obj.key)
        data = resp["Body"].read()
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            err = RecordError("object vanished between listing and reading", where=f"s3://{bucket}/{obj.key}:0")
            return Loaded(obj, obj.etag, [], [err], 0, f"s3://{bucket}/{obj.key}")
        raise classify_s3(exc, f"get s3://{bucket}/{obj.key}") from exc
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
