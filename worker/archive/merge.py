"""Merging archive objects: each record once, in sequence order per stream, parents first."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.archive.layout import parse_line, shard_created_ms
from worker.archive.reader import ArchivedObject, Loaded, list_all, read_object
from worker.errors import RecordError
from worker.records import StreamRecord

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    pass

__all__ = ["Event", "Finished", "MergeStats", "Opened", "merge", "plan", "read_all"]

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


def read_all(s3: S3Client, bucket: str, prefix: str) -> tuple[int, list[StreamRecord], list[RecordError]]:
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
