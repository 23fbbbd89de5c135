"""Backfill: the items that predate the stream, fed through the pipeline exactly once, while
live writes race the scan.

The snapshot
------------
The position P is **the beginning of the table's current stream** (its trim
horizon while nothing has been trimmed yet): the live consumer (KCL, initial
position ``TRIM_HORIZON``) applies every change after P, and the backfill
supplies the state *at* P, the items as they were before the stream's first
record. For every key:

* if the stream has a record of the key, the state at P is the **old image of
  its first record** (none for an INSERT: the item did not exist at P);
* otherwise the state at P is **what the scan read**: the key did not change
  between P and the read (a change would have a record), so the read shows it.

The scan (parallel segments, :meth:`Backfill.scan_page`) spools every item it
reads. When every segment is done, the whole stream is read once, from its
beginning to its current end, into the *change index* (first record per key).
The end lies after every scan read, so the index holds every change that
could have made a read differ from the state at P. The snapshot is then

    { the scanned image of k : k scanned, k not in the index }
  + { the first record's old image of k : k in the index, old image present }

An item existing at P that the scan did not return (deleted, or moved by a
re-put, before the scan reached it) changed during the scan, so it is in the
index: nothing is lost; a key scanned twice (moto moves a re-put item) is in
the index too, so nothing is counted twice.

Exactly once in every sink
--------------------------
Each snapshot item becomes a synthetic INSERT (:func:`~worker.sources.snapshot.snapshot_record`) on the
pseudo-shard ``snapshot-<id>`` with sequence number = its *ordinal* (its line
number across the spools, fixed once the index is closed), carrying
``"snapshot": {..., "at": "0"}``:

* **aggregates** key their high-water marks by (shard, sequence): the
  pseudo-shard's ordinals increase in apply order, so a resumed or repeated
  apply adds each snapshot item once per row (a row write carries all its
  buffered records or none). The live shards' marks are untouched, and deltas
  commute: snapshot + every change after P = the final items. (Records
  positioned at P *on the live shards* would not do: a row already advanced by
  a live record above P would skip them, and many records at one position
  collide in one mark.)
* **search** orders per document by :attr:`~worker.records.StreamRecord.item_sequence`,
  which for a snapshot record is ``at`` = 0, below every stream record: a live
  write, or a tombstone of a deleted item, always wins over the snapshot image,
  in either arrival order; an unchanged item is written once (0 >= 0 is stale).
* **archive** stores the records under the pseudo-shard, in the hour of P,
  each marked with the snapshot and its position (stream ARN, time of P):
  ``worker replay --rebuild`` starts from it (:mod:`worker.commands.replay`).

Assumptions (checked where possible)
------------------------------------
* ``NEW_AND_OLD_IMAGES`` (checked at start): the old image *is* the state at P.
* Nothing trimmed: the stream is younger than its 24-hour retention when the
  index is read (checked when fixing P and before reading the index), so a
  backfill must finish scanning within 24 h of enabling the stream. A stream
  older than that: enable a new stream (disable, enable) and backfill it.
* The consumer applies every record of the stream from its beginning (KCL
  ``initial_position = TRIM_HORIZON``) and nothing else feeds the sinks the
  pre-stream items.
* Records are published within ``settle_seconds`` of their write (waited before
  the index is read) and the scan reads are consistent as of P; eventually
  consistent reads (the default, half the cost) only risk a write made in the
  second before the stream was enabled: ``--consistent`` removes that.
* A change that leaves an item equal still has a record (DynamoDB emits none
  for an identical re-put; then the read shows the state at P anyway).

Costs: the scan's read capacity (``ceil(item KB / 4)`` per item, halved for
eventually consistent reads, spread over ``--segments``), the spools (about
the table's size on disk), and one read of the stream (the index holds one
entry per changed key in memory).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.errors import FatalError, RetryableError
from worker.log import get_logger
from worker.records import StreamRecord
from worker.retry import RetryPolicy
from worker.sources.backfill_state import Progress, SegmentProgress, Workdir
from worker.sources.poller import shards
from worker.sources.snapshot import Snapshot, key_of, key_text, label_time, snapshot_record

if TYPE_CHECKING:
    from worker.pipeline import Pipeline

UTC = dt.UTC
RETENTION_SECONDS = 24 * 3600.0
_RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "LimitExceededException",
}


@dataclass(frozen=True)
class ScanOptions:
    segments: int = 4
    page_items: int = 500  # Scan ``Limit``
    consistent: bool = False
    rate: float = 0.0  # read capacity units per second for the whole scan; 0: unbounded
    settle_seconds: float = 2.0  # wait for the stream to publish the scan's last writes


class ReadBudget:
    """Read capacity per second for all segments together: a page waits until the capacity
    consumed so far fits ``rate`` since the start (0: no limit)."""

    def __init__(self, rate: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.started = clock()
        self.consumed = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if self.rate <= 0:
            return
        with self.lock:
            due = self.started + self.consumed / self.rate
        delay = due - self.clock()
        if delay > 0:
            self.sleep(delay)

    def charge(self, units: float) -> None:
        with self.lock:
            self.consumed += units


class Backfill:
    """One backfill of one table: fix P, scan, close the index, apply (each step resumable).

    ``dynamodb``/``streams`` are boto3 clients; the driver is callable step by step
    (:meth:`scan_page`) so tests and local runs can interleave it with live writes.
    """

    def __init__(
        self,
        dynamodb: Any,
        streams: Any,
        table: str,
        state_dir: Path,
        options: ScanOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        retry: RetryPolicy | None = None,
        log: Any = None,
    ) -> None:
        self.dynamodb, self.streams, self.table = dynamodb, streams, table
        self.state_dir = state_dir
        self.options = options or ScanOptions()
        self.clock, self.sleep = clock, sleep
        self.retry = retry or RetryPolicy(sleep=sleep)
        self.log = log or get_logger("worker.backfill")
        self.lock = threading.Lock()
        self.budget = ReadBudget(self.options.rate, clock, sleep)
        self.snapshot: Snapshot | None = None
        self.progress: Progress | None = None
        self.workdir: Workdir | None = None
        self.key_names: tuple[str, ...] = ()
        self.estimate = 0  # DescribeTable's ItemCount (approximate)
        self.size_bytes = 0

    # -- 1. fix P ---------------------------------------------------------------------------

    def describe(self) -> Snapshot:
        """P for the table's current stream (checked: enabled, NEW_AND_OLD_IMAGES); reads nothing else."""
        desc = self._call(lambda: self.dynamodb.describe_table(TableName=self.table)["Table"], "DescribeTable")
        self.key_names = tuple(k["AttributeName"] for k in desc["KeySchema"])
        self.estimate = int(desc.get("ItemCount") or 0)
        self.size_bytes = int(desc.get("TableSizeBytes") or 0)
        spec = desc.get("StreamSpecification") or {}
        arn = desc.get("LatestStreamArn")
        if not arn or not spec.get("StreamEnabled"):
            raise FatalError(f"table {self.table!r} has no stream enabled: enable one (NEW_AND_OLD_IMAGES) first")
        if spec.get("StreamViewType") != "NEW_AND_OLD_IMAGES":
            raise FatalError(
                f"table {self.table!r} streams {spec.get('StreamViewType')}: the backfill needs NEW_AND_OLD_IMAGES"
            )
        stream = self._call(lambda: self.streams.describe_stream(StreamArn=arn)["StreamDescription"], "DescribeStream")
        created = stream.get("CreationRequestDateTime")
        taken = float(int(created.timestamp())) if isinstance(created, dt.datetime) else label_time(arn)
        return Snapshot(hashlib.sha1(arn.encode()).hexdigest()[:12], self.table, arn, taken)

    def dry_run(self) -> dict[str, Any]:
        """What a backfill would do: the stream, its age, the table's size and the read capacity it needs."""
        snapshot = self.describe()
        self.snapshot = snapshot
        self._check_retention()
        per_item = max(1, -(-self.size_bytes // max(self.estimate, 1) // 4096)) if self.estimate else 1
        rcu = self.estimate * per_item * (1.0 if self.options.consistent else 0.5)
        state = Workdir(self.state_dir / f"{self.table}-{snapshot.id}").load()
        return {
            "table": self.table,
            "stream": snapshot.stream_arn,
            "stream_age_hours": round((self.clock() - snapshot.taken) / 3600, 2),
            "items_estimate": self.estimate,
            "bytes_estimate": self.size_bytes,
            "rcu_estimate": rcu,
            "minutes_at_rate": round(rcu / self.options.rate / 60, 1) if self.options.rate > 0 else None,
            "state": "complete" if state and state.complete else "in progress" if state else "none",
        }

    def start(self, *, resume: bool = False) -> Progress:
        """Fix P (or take the one of the run being resumed) and open the state."""
        snapshot = self.describe()
        arn, taken = snapshot.stream_arn, snapshot.taken
        self.workdir = Workdir(self.state_dir / f"{self.table}-{snapshot.id}")
        progress = self.workdir.load()
        if progress is not None and not progress.complete and not resume:
            raise FatalError(
                f"a backfill of this stream is in progress ({self.workdir.state_path}): pass --resume to continue it"
            )
        if progress is None:
            if resume:
                self.log.warning("nothing to resume: starting a new backfill", state=str(self.workdir.state_path))
            data = {"id": snapshot.id, "table": self.table, "stream_arn": arn, "taken": taken}
            progress = Progress(data, [SegmentProgress() for _ in range(self.options.segments)])
            self.workdir.save(progress)
        elif len(progress.segments) != self.options.segments:
            self.log.info("resuming with the segment count of the interrupted run", segments=len(progress.segments))
        self.snapshot = Snapshot.of(progress.snapshot)
        self.progress = progress
        if not progress.index_closed:
            self._check_retention()
            for i, seg in enumerate(progress.segments):
                self.workdir.cut_spool(i, seg.bytes)
        return progress

    def _check_retention(self) -> None:
        assert self.snapshot is not None
        age = self.clock() - self.snapshot.taken
        if age >= RETENTION_SECONDS:
            raise FatalError(
                f"the stream of {self.table!r} is {age / 3600:.1f} h old: its first records may be trimmed, so the "
                "state at its beginning cannot be known; enable a new stream and backfill that one"
            )

    # -- 2. scan ----------------------------------------------------------------------------

    def scan_page(self, segment: int) -> bool:
        """Scan one page of ``segment`` into its spool; ``False`` once the segment is done."""
        progress, workdir = self._opened()
        seg = progress.segments[segment]
        if seg.done:
            return False
        self.budget.wait()
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Segment": segment,
            "TotalSegments": len(progress.segments),
            "Limit": self.options.page_items,
            "ReturnConsumedCapacity": "TOTAL",
            "ConsistentRead": self.options.consistent,
        }
        if seg.next_key:
            kwargs["ExclusiveStartKey"] = seg.next_key
        page = self._call(lambda: self.dynamodb.scan(**kwargs), f"Scan segment {segment}")
        items = page.get("Items", [])
        units = float((page.get("ConsumedCapacity") or {}).get("CapacityUnits", 0.0))
        self.budget.charge(units)
        written = workdir.append(segment, items) if items else 0
        with self.lock:
            seg.items += len(items)
            seg.bytes += written
            seg.next_key = page.get("LastEvaluatedKey")
            seg.done = seg.next_key is None
            progress.consumed_rcu += units
            workdir.save(progress)
        return not seg.done

    def scan(self, on_page: Callable[[Progress], None] | None = None) -> None:
        """Every segment to its end, ``segments`` in parallel."""
        progress, _ = self._opened()

        def run(segment: int) -> None:
            while self.scan_page(segment):
                if on_page:
                    on_page(progress)
            if on_page:
                on_page(progress)

        todo = [i for i, s in enumerate(progress.segments) if not s.done]
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="scan") as pool:
            for future in [pool.submit(run, i) for i in todo]:
                future.result()

    # -- 3. the change index ----------------------------------------------------------------

    def close_index(self) -> int:
        """Read the stream from its beginning to its end: the first record of each key."""
        progress, workdir = self._opened()
        if progress.index_closed:
            return progress.changed
        if any(not s.done for s in progress.segments):
            raise FatalError("the change index can only be closed after the scan is done")
        if self.options.settle_seconds > 0:
            self.sleep(self.options.settle_seconds)
        self._check_retention()
        first: dict[bytes, dict[str, Any]] = {}
        for sid, rec in self._stream_records():
            ddb = rec.get("dynamodb") or {}
            key = key_text(ddb.get("Keys") or {})
            if key not in first:
                first[key] = {"keys": ddb.get("Keys"), "seq": ddb.get("SequenceNumber"), "shard": sid}
                first[key]["old"] = ddb.get("OldImage") or None
        workdir.write_changed(list(first.values()))
        progress.index_closed = True
        progress.changed = len(first)
        workdir.save(progress)
        return len(first)

    def _stream_records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        assert self.snapshot is not None
        arn = self.snapshot.stream_arn
        for shard in self._call(lambda: shards(self.streams, arn), "DescribeStream"):
            sid = shard["ShardId"]
            get_iterator = partial(
                self.streams.get_shard_iterator, StreamArn=arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON"
            )
            it = self._call(get_iterator, "GetShardIterator").get("ShardIterator")
            while it:
                page = self._call(partial(self.streams.get_records, ShardIterator=it, Limit=1000), "GetRecords")
                records = page.get("Records", [])
                for rec in records:
                    yield sid, rec
                if not records:
                    break
                it = page.get("NextShardIterator")

    # -- 4. the snapshot's records ----------------------------------------------------------

    def records(self, after: int = 0) -> Iterator[StreamRecord]:
        """The snapshot as synthetic records, ordinals above ``after`` (see the module docstring)."""
        progress, workdir = self._opened()
        if not progress.index_closed:
            raise FatalError("the snapshot is known only once the change index is closed")
        assert self.snapshot is not None
        changed = list(workdir.read_lines(workdir.changed_path))
        index = {key_text(e["keys"]) for e in changed}
        ordinal = 0
        for i, seg in enumerate(progress.segments):
            for item in workdir.read_lines(workdir.segment_path(i), seg.bytes):
                ordinal += 1
                if ordinal <= after:
                    continue
                keys = key_of(item, self.key_names)
                if key_text(keys) not in index:
                    yield snapshot_record(self.snapshot, ordinal, keys, item)
        for entry in changed:
            ordinal += 1
            if ordinal > after and entry.get("old"):
                yield snapshot_record(self.snapshot, ordinal, entry["keys"], entry["old"])

    def apply(self, pipeline: Pipeline, on_flush: Callable[[Progress], None] | None = None) -> int:
        """Feed the snapshot through ``pipeline``, saving the durable ordinal after each flush."""
        progress, workdir = self._opened()
        if progress.complete:
            return 0
        sent = 0
        batch = max(1, pipeline.max_batch_records)
        last = progress.applied
        for record in self.records(after=progress.applied):
            pipeline.add_record(record)
            sent += 1
            last = record.sequence
            if sent % batch == 0:
                pipeline.flush()
                progress.applied = last
                workdir.save(progress)
                if on_flush:
                    on_flush(progress)
        pipeline.flush()
        progress.applied = max(last, progress.applied)
        progress.complete = True
        progress.extra["snapshot_records"] = progress.extra.get("snapshot_records", 0) + sent
        workdir.save(progress)
        if on_flush:
            on_flush(progress)
        return sent

    def run(self, pipeline: Pipeline, on_progress: Callable[[Progress], None] | None = None) -> Progress:
        """Scan, close the index, apply: the whole backfill (after :meth:`start`)."""
        self.scan(on_progress)
        self.close_index()
        self.apply(pipeline, on_progress)
        progress, _ = self._opened()
        return progress

    # -- internals --------------------------------------------------------------------------

    def _opened(self) -> tuple[Progress, Workdir]:
        if self.progress is None or self.workdir is None:
            raise FatalError("backfill not started: call start() first")
        return self.progress, self.workdir

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        def attempt() -> Any:
            try:
                return fn()
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
                status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code in _RETRYABLE or (isinstance(status, int) and status >= 500) or _is_connection(exc):
                    raise RetryableError(f"{what}: {exc}") from exc
                if code is not None:
                    raise FatalError(f"{what} on {self.table!r}: {code}: {exc}") from exc
                raise

        return self.retry.call(attempt, what)


def _is_connection(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return isinstance(exc, BotoConnectionError | HTTPClientError)
