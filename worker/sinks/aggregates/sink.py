"""Aggregates sink: counts and sums per group in DynamoDB tables, with an exactly-once effect.

Cadence and freshness: the pipeline flushes this sink every ``[pipeline]
max_batch_records`` records or when its oldest unflushed record is
``flush_interval`` seconds old, so a change reaches its rows at worst
``flush_interval`` plus one flush after it arrived. A flush may happen long
before the checkpoint passes its records (the checkpoint waits for the slowest
sink): after a crash those records come again and the per-shard marks on each
row make the second application a no-op, whatever the batch boundaries.

Configuration (one sink serves every ``[[aggregates]]`` entry)::

    [[aggregates]]
    name = "orders_by_status"          # the rows' partition key
    table = "OrderStats"               # target table (several aggregates may share one)
    group_by = ["status", "ship.city"] # attribute paths, nested allowed
    where = { channel = "web", coupon = { exists = true } }   # optional; also { in = [...] }
    metrics = { orders = "count", revenue = "sum(total)" }
    missing_group = "skip"             # or "null": items lacking a group attribute

What an item contributes (filter, group, missing groups, non-numeric values,
exact decimals) is defined in :mod:`worker.sinks.aggregates.spec`.

Target table layout
-------------------
Key: ``pk`` (S, HASH) = the aggregate's name; ``sk`` (S, RANGE) = the group as a
JSON array of its values in ``group_by`` order (``["paid","Paris"]``; numbers
canonical, no trailing zeros: ``[12.5]``; a missing group under ``"null"`` is
``[null]``). Attributes:

==============  ====  =============================================================
``group``       M     path -> value (``{"status": "paid", "ship.city": "Paris"}``)
``count``       N     items currently in the group
*metric name*   N     one per metric: a count metric equals ``count``; a sum is exact
``hwm``         M     shard id -> ``"<40-digit sequence>@<epoch s>"``: bookkeeping
``updated_at``  S     ISO-8601 UTC time of the last write
==============  ====  =============================================================

Query one aggregate with ``pk = :name``; averages are ``sum / count``. A group
that empties keeps its row with ``count`` 0 and every sum 0 (its marks must
outlive it, see below); ``report()`` and readers should skip such rows.
Provisioning creates tables as ``PAY_PER_REQUEST``; production tables must have
that key schema (checked at start). Metrics added to an existing aggregate only
see changes from then on: rebuild (a fresh table, replay) to backfill.

Exactly-once effect: per-row, per-shard high-water marks
--------------------------------------------------------
Each change gives a delta per touched row: minus the old image's contribution,
plus the new image's (INSERT: +new; REMOVE and TTL expiry: -old; MODIFY: both;
a no-op nothing; a change leaving a row's contribution equal gives no delta).
Deltas are buffered per (aggregate, group) **and per record** (shard, sequence).
At ``flush()`` each touched row gets one ``UpdateItem`` that ``ADD``\\s the sum
of the deltas of the records *above the row's mark* for their shard, sets
``hwm[shard]`` to the highest such sequence, and is conditional on
``attribute_not_exists(hwm[shard]) OR hwm[shard] < first``, ``first`` being the
lowest sequence in the write (marks are 40-digit zero-padded text, so string
order is sequence order; no 64-bit overflow). A new row is created under
``attribute_not_exists(pk)``.

Why this is exact. Invariant: *for every row and shard, the records of that
shard applied to the row are exactly those touching it with a sequence at or
below ``hwm[shard]``.* A write keeps it: it applies every buffered record of
the shard above the mark the sink knows, and the buffer holds every record of
the shard between the worker's checkpoint and the write (a shard is processed
in order from a checkpoint, and the checkpoint only moves after a successful
flush, so records at or below it were already applied by someone, hence lie
at or below the mark). If the real mark moved since the sink read it (another
worker, a crash-and-restart) the write is still exact when the condition
holds (the other writer applied only records below ``first``, none of ours);
when it fails the sink re-reads the row and recomputes the suffix above the
new mark, which is empty when everything was applied: the failure then means
"already applied" and is success. Consequences:

* redelivery with other batch boundaries: records at or below the mark are
  skipped, per row, so a row that applied a prefix of a flush gets the rest;
* a crash anywhere (between two row writes, between the writes and the
  checkpoint): rows are independent, each is applied exactly once by whichever
  attempt gets there first, and nothing is acknowledged before ``flush()``
  returned (the pipeline's contract). A TransactWriteItems over all rows is
  therefore unnecessary: it would double the write cost, cap a flush at 100
  rows / 4 MB, and make every row conflict when any does;
* two workers on one shard: their conditional writes serialise per row; the
  loser re-reads and applies only what is left (usually nothing).

Deltas commute, so shards may interleave in any order (a child shard before its
parent) and the totals still end at the recomputation from the final items.

Cost per record. One ``UpdateItem`` per touched row per flush, whatever the
number of records: a record touches at most two rows per aggregate (its old and
new group), and coalescing makes hot groups cost one write per flush (see
``bench/aggregates.py``). A write consumes ``ceil(item size / 1 KB)`` WCU; a row
is about 150 B plus ~90 B per mark. Reads are only needed for rows the sink has
not seen (one strongly consistent BatchGetItem per 100 rows, then cached from
each write's ``ALL_NEW`` response) and after a failed condition (which costs 1
WCU). No transactions (they cost double).

Bounded bookkeeping. DynamoDB Streams keeps records 24 h and rolls shards every
few hours, so marks of old shards accumulate. Every write to a row also
``REMOVE``\\s marks written more than ``keep_seconds`` ago (default 30 h: 24 h
retention + 6 h margin): all records such a mark covers were created before
that write, hence have left the stream and can never be redelivered. The
removal is conditional on the mark being still as read (a cached mark may have
been rewritten meanwhile by a shard that lives longer than usual). A row
therefore holds one mark per shard that wrote it within the last 30 h (about
8 generations per concurrently open shard), plus the pseudo-shard below.
Assumption (as KCL's leases): no write is delayed by more than the margin
after its records left the stream (a process frozen for 6 h while holding a
stale batch). Replays of archives older than the retention must go to fresh
tables: their shards' marks may already be pruned.

Records without a shard id (fixture files) use the pseudo-shard
:data:`LOCAL_SHARD` with their own sequence numbers: feed them in stream order.
Its mark is never pruned (one entry per row at most). A replayed dead letter
(:attr:`~worker.diff.Change.replayed`: only the sinks that parked it see it)
is applied under a pseudo-shard of its own, ``replay:<shard>/<sequence>``: its
real shard's mark has passed it (the records after it were applied), and its
own mark makes a second replay a no-op. Those marks are pruned like a shard's
(after ``keep_seconds``): replaying the same dead letter again after that
would count it twice.

Failures: throttling, 5xx and connection errors raise ``RetryableError`` (the
pipeline retries ``flush()`` with backoff and jitter; rows written before the
error are done and leave the buffer, the rest stay); a missing table, a
validation error or a total beyond 38 significant digits stops the worker. A
non-numeric value under a summed attribute adds 0 (the documented rule) and the
record is parked from :meth:`AggregatesSink.add` with the field at fault (so is
one whose group is too long for a sort key: it counts nowhere). Known gap of
the emulator: moto adds numbers with 28 significant digits, DynamoDB with 38.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from worker.attributes import fit_add, number_fault
from worker.canonical import STREAM_RETENTION_SECONDS, fits_dynamodb
from worker.diff import Change, ChangeKind, image_missing
from worker.errors import FatalError, RecordError, RetryableError
from worker.records import StreamRecord
from worker.sinks.aggregates.spec import (
    ZERO,
    Aggregate,
    AggregateConfig,
    compile_aggregate,
    deltas,
    recompute,
)
from worker.sinks.aggregates.store import (
    COUNT,
    RowId,
    RowState,
    RowWrite,
    ensure_table,
    query_rows,
    read_states,
    report_rows,
    write,
)
from worker.sinks.aggregates.values import Vector, add_vectors

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from worker.config import Config

__all__ = ["LOCAL_SHARD", "AggregatesSink", "create", "recompute", "report_rows"]

SINK_NAME = "aggregates"
LOCAL_SHARD = "local"  # the pseudo-shard of records without a shard id
REPLAY_SHARD_PREFIX = "replay:"  # + shard/sequence: the pseudo-shard of one replayed dead letter
HWM_MARGIN_SECONDS = 6 * 3600.0
KEEP_SECONDS = STREAM_RETENTION_SECONDS + HWM_MARGIN_SECONDS

RecordId = tuple[str, int]  # (shard, sequence)
RowKey = tuple[int, str]  # (aggregate index, sort key)


@dataclass
class PendingRow:
    """Buffered deltas of one row, one per record (so a redelivered prefix can be skipped)."""

    aggregate: Aggregate
    group: tuple[Any, ...]
    entries: dict[RecordId, Vector] = field(default_factory=dict)


@dataclass
class AggregateStats:
    writes: int = 0  # successful UpdateItem calls
    conflicts: int = 0  # failed conditions (re-read and recomputed)
    reads: int = 0  # rows read (BatchGetItem keys)
    already_applied: int = 0  # rows whose buffered records were all at or below the mark


class AggregatesSink:
    """The sink (see the module docstring for the mechanism and the table layout).

    ``client`` is a boto3 DynamoDB client (thread-safe; ``concurrency`` rows are
    written in parallel, 1 writes in order). ``clock`` gives epoch seconds.
    """

    name = SINK_NAME

    def __init__(
        self,
        client: DynamoDBClient,
        aggregates: Sequence[Aggregate | AggregateConfig],
        *,
        clock: Callable[[], float] = time.time,
        keep_seconds: float = KEEP_SECONDS,
        concurrency: int = 8,
        max_rounds: int = 6,
        cache_rows: int = 100_000,
        log: Any = None,
    ) -> None:
        self.client = client
        self.aggregates = [
            a if isinstance(a, Aggregate) else compile_aggregate(a, f"aggregates[{i}]")
            for i, a in enumerate(aggregates)
        ]
        self.clock = clock
        self.keep_seconds = keep_seconds
        self.concurrency = max(1, concurrency)
        self.max_rounds = max_rounds
        self.cache_rows = cache_rows
        self.log = log or structlog.get_logger("worker.sinks.aggregates")
        self.stats = AggregateStats()
        self._rows: dict[RowKey, PendingRow] = {}
        self._seen: dict[RecordId, StreamRecord] = {}  # the records in the buffer
        self._reads = [a.names for a in self.aggregates]  # the top-level attributes each one reads
        self._names = frozenset().union(*self._reads)
        self._states: OrderedDict[RowId, RowState] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None

    # -- Sink -------------------------------------------------------------------------------

    def add(self, change: Change) -> None:
        """Buffer the change's deltas; park (raise) a record whose new image cannot be summed."""
        if change.noop:
            return
        record = change.record
        shard = record.shard_id or LOCAL_SHARD
        if change.replayed:  # a dead letter this sink parked: applied once, under its own mark
            shard = f"{REPLAY_SHARD_PREFIX}{shard}/{record.sequence_number}"
        rid: RecordId = (shard, record.sequence)
        if rid in self._seen:
            return  # delivered twice into one buffer: its deltas are already here
        kind = change.kind
        if kind is not ChangeKind.INSERT and not record.has_old_image:
            raise image_missing(change, "old", self.name)
        wants_new = kind is ChangeKind.INSERT or kind is ChangeKind.MODIFY
        if wants_new and not record.has_new_image:
            raise image_missing(change, "new", self.name)
        affected: Sequence[int] | None = None  # None: every aggregate
        names = self._names
        if kind is ChangeKind.MODIFY:
            # An aggregate none of whose attributes differ (raw equality implies equality)
            # gets equal old and new contributions: its deltas net to zero, and the new
            # image's faults there are the old image's, reported when it was new.
            changed = record.changed_attributes()
            affected = [i for i, read in enumerate(self._reads) if not read.isdisjoint(changed)]
            if not affected:
                return
            if len(affected) < len(self._reads):
                names = frozenset().union(*(self._reads[i] for i in affected))
        old, new = record.select(names)  # decodes only the attributes aggregates read
        if kind is ChangeKind.INSERT:
            old = None
        if not wants_new:
            new = None
        row_deltas, faults = deltas(self.aggregates, old, new, only=affected)
        for d in row_deltas:
            row = self._rows.get((d.index, d.key))
            if row is None:
                row = self._rows[(d.index, d.key)] = PendingRow(self.aggregates[d.index], d.group)
            row.entries[rid] = d.vector
        self._seen[rid] = record
        if faults:
            raise RecordError(
                "; ".join(f"{name}: {f.reason}" for name, f in faults),
                field=f"dynamodb.NewImage.{faults[0][1].path}",
                sink=self.name,
                applied=True,  # counted by the documented rule: a replay must not count it again
            )

    def flush(self) -> Sequence[RecordError]:
        """Write one conditional update per touched row; returns when all are durable.

        Returns the records refused because a row could not absorb them (a total
        beyond DynamoDB's 38 digits or range, :func:`_overflowing`): they are
        taken out of every row they touch before any write, so each row stays
        exact and the record can be replayed once fixed.
        """
        pending = list(self._rows)
        refused: list[RecordError] = []
        for _ in range(self.max_rounds):
            if not pending:
                break
            unknown = [self._row_id(k) for k in pending if self._row_id(k) not in self._states]
            if unknown:
                self.stats.reads += len(unknown)
                for rid, state in read_states(self.client, unknown).items():
                    self._remember(rid, state)
            refused += self._refuse_overflows(pending)
            pending = self._apply(pending)
        if pending:
            raise RetryableError(f"aggregates: {len(pending)} row(s) still contended after {self.max_rounds} rounds")
        self._seen.clear()
        return refused

    def _refuse_overflows(self, keys: list[RowKey]) -> list[RecordError]:
        """Take every record some row cannot absorb out of all rows; one error per record."""
        faults: dict[RecordId, str] = {}
        for key in keys:
            state = self._states.get(self._row_id(key))
            if state is not None:
                for rid, reason in _overflowing(self._rows[key], state):
                    faults.setdefault(rid, f"aggregate {self._rows[key].aggregate.name} group {key[1]}: {reason}")
        errors = []
        for rid, reason in faults.items():
            for row in self._rows.values():
                row.entries.pop(rid, None)
            record = self._seen.get(rid)
            if record is None:
                continue
            errors.append(
                RecordError(
                    reason,
                    where=record.location,
                    field="dynamodb.NewImage",
                    payload=record.original(),
                    sink=self.name,
                    shard_id=record.shard_id,
                    sequence_number=record.sequence_number,
                    raw=record.original_text(),
                )
            )
        return errors

    def close(self) -> None:
        self._rows.clear()
        self._seen.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @property
    def pending(self) -> list[PendingRow]:
        """The rows with deltas not yet durable (a read-only view, for tests and reports)."""
        return list(self._rows.values())

    # -- report -----------------------------------------------------------------------------

    def report(self) -> dict[str, list[dict[str, Any]]]:
        """Each aggregate's non-empty rows: ``{"group": {...}, "metrics": {...}}`` in row-key order."""
        return {agg.name: report_rows(agg, query_rows(self.client, agg.table, agg.name)) for agg in self.aggregates}

    # -- internals --------------------------------------------------------------------------

    def _row_id(self, key: RowKey) -> RowId:
        agg = self.aggregates[key[0]]
        return (agg.table, agg.name, key[1])

    def _remember(self, rid: RowId, state: RowState) -> None:
        self._states[rid] = state
        self._states.move_to_end(rid)
        while len(self._states) > max(self.cache_rows, len(self._rows)):  # never evict a row being flushed
            self._states.popitem(last=False)

    def _plan(self, key: RowKey, now: float) -> RowWrite | None:
        """The write that applies this row's records above its marks (``None``: all applied)."""
        row = self._rows[key]
        state = self._states[self._row_id(key)]
        agg = row.aggregate
        total = agg.zero()
        marks: dict[str, tuple[int, int]] = {}
        for (shard, seq), delta in row.entries.items():
            applied = state.applied(shard)
            if applied is not None and seq <= applied:
                continue
            total = add_vectors(total, delta)
            first, last = marks.get(shard, (seq, seq))
            marks[shard] = (min(first, seq), max(last, seq))
        if not marks:
            return None
        adds: list[tuple[str, Decimal]] = [(COUNT, total[0])]
        sums = iter(total[1:])
        for m in agg.metrics:
            if m.path is None:
                if m.name != COUNT:
                    adds.append((m.name, total[0]))
            else:
                adds.append((m.name, next(sums)))
        for attr, d in adds:
            if not fits_dynamodb(d):
                raise FatalError(f"aggregate {agg.name} group {key[1]}: {attr} delta {d} exceeds 38 significant digits")
        prune = state.stale(now, self.keep_seconds, [*marks, LOCAL_SHARD]) if state.exists else []
        return RowWrite(
            table=agg.table,
            pk=agg.name,
            sk=key[1],
            group=dict(zip(agg.group_by, row.group, strict=True)),
            deltas=adds,
            marks=marks,
            create=not state.exists,
            prune=prune,
        )

    def _apply(self, keys: list[RowKey]) -> list[RowKey]:
        """Write every row that needs it; the rows whose condition failed (to re-read)."""
        now = self.clock()
        plans: list[tuple[RowKey, RowWrite]] = []
        conflicts: list[RowKey] = []
        for key in keys:
            if self._row_id(key) not in self._states:  # evicted by a flush larger than the cache
                conflicts.append(key)
                continue
            plan = self._plan(key, now)
            if plan is None:
                self.stats.already_applied += 1
                del self._rows[key]
            else:
                plans.append((key, plan))

        def settle(key: RowKey, state: RowState | None) -> None:
            rid = self._row_id(key)
            if state is None:  # someone moved the mark (or created the row) first: re-read
                self.stats.conflicts += 1
                self._states.pop(rid, None)
                conflicts.append(key)
                self.log.debug("aggregate row contended", table=rid[0], aggregate=rid[1], group=rid[2])
                return
            self.stats.writes += 1
            self._remember(rid, state)
            del self._rows[key]

        if self.concurrency == 1 or len(plans) <= 1:
            for key, plan in plans:
                settle(key, write(self.client, plan, now))
            return conflicts
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="aggregates")
        futures = [(key, self._pool.submit(write, self.client, plan, now)) for key, plan in plans]
        failure: BaseException | None = None
        for key, fut in futures:
            try:
                state = fut.result()
            except BaseException as exc:  # every write settles before the first error surfaces
                failure = failure or exc
                continue
            settle(key, state)
        if failure is not None:
            raise failure
        return conflicts


def _overflowing(row: PendingRow, state: RowState) -> list[tuple[RecordId, str]]:
    """The records (in order) whose deltas would take a total of the row, or the write's
    delta itself, beyond what DynamoDB stores exactly (38 digits, 1e-130..9.99e125)."""
    agg = row.aggregate
    names = [COUNT, *(m.name for m in agg.metrics if m.path is not None)]
    stored = [state.totals.get(n, ZERO) for n in names]
    total = agg.zero()
    out: list[tuple[RecordId, str]] = []
    for (shard, seq), delta in row.entries.items():
        applied = state.applied(shard)
        if applied is not None and seq <= applied:
            continue
        try:  # the common case, in C: every sum fits (fit_add raises when one does not)
            candidate = tuple([fit_add(t, d) for t, d in zip(total, delta, strict=True)])
            for held, c in zip(stored, candidate, strict=True):
                fit_add(held, c)
        except ArithmeticError:
            out.append(((shard, seq), _overflow_reason(names, stored, add_vectors(total, delta))))
        else:
            total = candidate
    return out


def _overflow_reason(names: list[str], stored: list[Decimal], candidate: Vector) -> str:
    for name, held, d in zip(names, stored, candidate, strict=True):
        fault = number_fault(d) or number_fault(add_vectors((held,), (d,))[0])
        if fault is not None:
            return f"{name}: {held} + {d}: {fault}; the record is not counted"
    return "a total would leave DynamoDB's numbers; the record is not counted"  # fit_add's rule is number_fault's


def create(cfg: Config, *, provision: bool = False) -> AggregatesSink:
    """The sink for every ``[[aggregates]]``; checks (or, with ``provision``, creates) the tables."""
    from worker.aws import client

    ddb = client(cfg, "dynamodb")
    sink = AggregatesSink(ddb, cfg.aggregates)
    for table in sorted({a.table for a in sink.aggregates}):
        ensure_table(ddb, table, create=provision)
    return sink
