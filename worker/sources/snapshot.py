"""Snapshot records: a backfill's synthetic INSERTs, how they are named, marked and recognised.

A snapshot of a table at position P (the beginning of its stream, see
:mod:`worker.sources.backfill`) is a sequence of INSERT records on the
pseudo-shard ``snapshot-<id>`` (``id``: a hash of the stream ARN), numbered by
ordinal, each carrying ``"snapshot": {"id", "table", "stream", "position",
"taken", "at"}``: ``taken`` is the time of P (ISO 8601, UTC, whole seconds; the
records' ``ApproximateCreationDateTime`` too, so the archive files them in P's
hour) and ``at`` the stream position the state sits at (``"0"``: below every
sequence number of the stream). :attr:`worker.records.StreamRecord.item_sequence`
reads ``at``; per-shard marks use the ordinal.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson

from worker.decode import decode_mapping
from worker.errors import FatalError
from worker.records import StreamRecord

UTC = dt.UTC
SNAPSHOT_PREFIX = "snapshot-"
BEGINNING = "0"  # ``at`` of every snapshot record: below every stream sequence number


def is_snapshot_stream(stream: str) -> bool:
    """Whether an archive stream (a shard id) holds a snapshot."""
    return stream.startswith(SNAPSHOT_PREFIX)


@dataclass(frozen=True)
class Snapshot:
    """The position P (the stream's beginning) and how its records are named."""

    id: str
    table: str
    stream_arn: str
    taken: float  # epoch seconds of P (the stream's creation), whole seconds

    @property
    def shard(self) -> str:
        return f"{SNAPSHOT_PREFIX}{self.id}"

    def marker(self) -> dict[str, Any]:
        """What every snapshot record carries (the archive keeps it)."""
        return {
            "id": self.id,
            "table": self.table,
            "stream": self.stream_arn,
            "position": "trim-horizon",
            "taken": dt.datetime.fromtimestamp(self.taken, UTC).isoformat(),
            "at": BEGINNING,
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> Snapshot:
        return cls(data["id"], data["table"], data["stream_arn"], float(data["taken"]))


def snapshot_record(snapshot: Snapshot, ordinal: int, keys: dict[str, Any], image: dict[str, Any]) -> StreamRecord:
    """The synthetic INSERT of one snapshot item (see the module docstring)."""
    seq = str(ordinal)
    obj = {
        "eventID": f"{snapshot.shard}-{ordinal}",
        "eventName": "INSERT",
        "eventSource": "worker:backfill",
        "tableName": snapshot.table,
        "snapshot": snapshot.marker(),
        "dynamodb": {
            "Keys": keys,
            "NewImage": image,
            "SequenceNumber": seq,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "ApproximateCreationDateTime": snapshot.taken,
        },
    }
    return decode_mapping(obj, where=f"{snapshot.shard}/{seq}", shard_id=snapshot.shard)


def key_of(item: dict[str, Any], key_names: tuple[str, ...]) -> dict[str, Any]:
    return {k: item[k] for k in key_names if k in item}


def key_text(keys: dict[str, Any]) -> bytes:
    return orjson.dumps(keys, option=orjson.OPT_SORT_KEYS)


def label_time(arn: str) -> float:
    """The stream's creation time from its label (the ARN's last part, ISO 8601 UTC)."""
    label = arn.rsplit("/", 1)[-1]
    try:
        when = dt.datetime.fromisoformat(label)
    except ValueError as exc:
        raise FatalError(f"cannot tell when stream {arn} was created (no CreationRequestDateTime)") from exc
    return float(int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()))


@dataclass(frozen=True)
class Base:
    """The snapshot a rebuild starts from: its archive stream and the time of its position."""

    stream: str
    taken: dt.datetime


def rebuild_base(
    s3: Any, bucket: str, prefix: str, tables: list[str], *, since: dt.datetime, until: dt.datetime
) -> Base | None:
    """The latest archived snapshot taken at or before ``since`` (else the latest before ``until``).

    A rebuild feeds that snapshot and every record created at or after its
    ``taken`` (the records of its stream, all after its position; the records of
    older streams, all before it), so it needs no record older than the snapshot,
    however long ago the stream trimmed them. ``None`` when the archive holds none.
    """
    from worker import archive

    found: dict[str, archive.ArchivedObject] = {}
    for obj in archive.list_all(s3, bucket, prefix):
        if is_snapshot_stream(obj.name.stream) and (not tables or obj.name.table in tables):
            first = found.get(obj.name.stream)
            if first is None or obj.name.first < first.name.first:
                found[obj.name.stream] = obj
    taken: dict[str, dt.datetime] = {}
    for stream, obj in found.items():
        loaded = archive.read_object(s3, bucket, obj)
        if loaded.entries:
            record = archive.parse_line(loaded.entries[0][2], f"{loaded.source}:{loaded.entries[0][1]}")
            taken[stream] = record.created_at
    before = [(t, s) for s, t in taken.items() if t < until]
    at_or_before = [(t, s) for t, s in before if t <= since]
    pick = max(at_or_before or before, default=None)
    return Base(pick[1], pick[0]) if pick else None
