"""The aggregates sink: buffers deltas per row and record, writes conditional row updates.

The mechanism, the table layout and the exactly-once argument are in the
package's docstring, :mod:`worker.sinks.aggregates`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from worker.attributes import fit_add, number_fault
from worker.canonical import STREAM_RETENTION_SECONDS
from worker.diff import Change, ChangeKind, image_missing
from worker.errors import RecordError, RetryableError
from worker.log import get_logger
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
    BATCH_GET_MAX,
    COUNT,
    TRANSACTION_MAX_ROWS,
    Outcome,
    RowId,
    RowState,
    RowWrite,
    ensure_table,
    query_rows,
    read_states,
    report_rows,
    transact,
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
REREAD_SECONDS = 3600.0  # a row state only derived locally (after transactions) is read again after this

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
    writes: int = 0  # rows written (UpdateItem calls, or rows of committed transactions)
    transactions: int = 0  # TransactWriteItems calls
    conflicts: int = 0  # failed conditions (re-read and recomputed)
    reads: int = 0  # rows read (BatchGetItem keys)
    already_applied: int = 0  # rows whose buffered records were all at or below the mark


class AggregatesSink:
    """The sink (see the package docstring for the mechanism and the table layout).

    ``client`` is a boto3 DynamoDB client, or :func:`~worker.sinks.aggregates.wire.wire_client`
    of one (production); thread-safe: ``concurrency`` row writes or transactions
    are in flight at once, 1 writes in order. ``transaction_rows``: see the package
    docstring. ``clock`` gives epoch seconds. ``cache_rows`` bounds the rows whose
    marks are remembered between flushes (about 1 KB each; least recently used
    first out, a row then costs a read when it comes back).
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
        transaction_rows: int = 100,
        reread_seconds: float = REREAD_SECONDS,
        max_rounds: int = 6,
        cache_rows: int = 20_000,
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
        self.transaction_rows = transaction_rows
        self.reread_seconds = reread_seconds
        self.max_rounds = max_rounds
        self.cache_rows = cache_rows
        self.log = log or get_logger("worker.sinks.aggregates")
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
            row = self._rows.get((d.number, d.key))
            if row is None:
                row = self._rows[(d.number, d.key)] = PendingRow(self.aggregates[d.number], d.group)
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
            now = self.clock()
            unknown = [rid for rid in map(self._row_id, pending) if not self._known(rid, now)]
            if unknown:
                self.stats.reads += len(unknown)
                for rid, state in self._read(unknown).items():
                    self._remember(rid, state._replace(read_at=now))
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

    def _read(self, rows: list[RowId]) -> dict[RowId, RowState]:
        """Strongly consistent states of ``rows``: BatchGetItems of 100 keys, ``concurrency`` at a time."""
        chunks = [rows[i : i + BATCH_GET_MAX] for i in range(0, len(rows), BATCH_GET_MAX)]
        if self.concurrency == 1 or len(chunks) == 1:
            return read_states(self.client, rows)
        out: dict[RowId, RowState] = {}
        for states in self._all(lambda chunk: read_states(self.client, chunk), chunks):
            if isinstance(states, BaseException):
                raise states
            out.update(states)
        return out

    def _all(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> list[Any]:
        """``fn`` on every argument in the pool: each call's result or exception, in order, once
        every call has ended (so nothing is still writing when the caller raises)."""
        futures = [self._executor().submit(fn, arg) for arg in args]
        results: list[Any] = []
        for fut in futures:
            try:
                results.append(fut.result())
            except BaseException as exc:
                results.append(exc)
        return results

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="aggregates")
        return self._pool

    def _known(self, rid: RowId, now: float) -> bool:
        """Whether the cached state may plan a write: cached, and read from DynamoDB within
        ``reread_seconds`` (states derived after transactions age; see the module docstring)."""
        state = self._states.get(rid)
        return state is not None and now - state.read_at <= self.reread_seconds

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
        marks: dict[str, tuple[int, int]] = {}
        if len(row.entries) == 1 and not state.exists:  # the common case of a new group: one record, no marks
            (((shard, seq), total),) = row.entries.items()
            marks[shard] = (seq, seq)
        else:
            total = agg.zero()
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
        # Every delta fits DynamoDB's numbers: _refuse_overflows took out, against this very state,
        # each record whose running total (the delta written here) or stored total would not.
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
        """Write every row that needs it; the rows to plan again (re-read first when contended)."""
        now = self.clock()
        plans: list[tuple[RowKey, RowWrite]] = []
        again: list[RowKey] = []
        for key in keys:
            if self._row_id(key) not in self._states:  # evicted by a flush larger than the cache
                again.append(key)
                continue
            plan = self._plan(key, now)
            if plan is None:
                self.stats.already_applied += 1
                del self._rows[key]
            else:
                plans.append((key, plan))
        if not plans:
            return again
        if self.transaction_rows and len(plans) >= self.transaction_rows:
            n = -(-len(plans) // TRANSACTION_MAX_ROWS)  # as few transactions as the limit allows, of equal size
            chunks = [plans[i::n] for i in range(n)]
            self.stats.transactions += n
            self._run(chunks, lambda chunk: transact(self.client, [p for _, p in chunk], now), again, now)
        else:
            single = [[item] for item in plans]
            self._run(single, lambda one: [_as_outcome(write(self.client, one[0][1], now))], again, now)
        return again

    def _run(
        self,
        chunks: list[list[tuple[RowKey, RowWrite]]],
        call: Callable[[list[tuple[RowKey, RowWrite]]], Sequence[Outcome | RowState]],
        again: list[RowKey],
        now: float,
    ) -> None:
        """Run ``call`` on every chunk (``concurrency`` at a time) and settle each row by its outcome;
        every call settles before the first error surfaces (rows written stay written)."""

        def settle(chunk: list[tuple[RowKey, RowWrite]], outcomes: Sequence[Outcome | RowState]) -> None:
            for (key, plan), outcome in zip(chunk, outcomes, strict=True):
                rid = self._row_id(key)
                if outcome is Outcome.NOT_TRIED:
                    again.append(key)
                elif outcome is Outcome.CONFLICT:  # someone moved the mark (or created the row) first
                    self.stats.conflicts += 1
                    self._states.pop(rid, None)
                    again.append(key)
                    self.log.debug("aggregate row contended", table=rid[0], aggregate=rid[1], group=rid[2])
                else:
                    self.stats.writes += 1
                    if isinstance(outcome, RowState):  # ALL_NEW: DynamoDB's own view of the row
                        self._remember(rid, outcome._replace(read_at=now))
                    elif (base := self._states.get(rid)) is not None:  # a transaction's: derived
                        self._remember(rid, base.after(plan, now))
                    del self._rows[key]

        if self.concurrency == 1 or len(chunks) <= 1:
            for chunk in chunks:
                settle(chunk, call(chunk))
            return
        failure: BaseException | None = None
        for chunk, outcomes in zip(chunks, self._all(call, chunks), strict=True):
            if isinstance(outcomes, BaseException):
                failure = failure or outcomes
            else:
                settle(chunk, outcomes)
        if failure is not None:
            raise failure


def _as_outcome(state: RowState | None) -> Outcome | RowState:
    """A single ``UpdateItem``'s result as a row outcome: its new state, or a conflict."""
    return Outcome.CONFLICT if state is None else state


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
    from worker.sinks.aggregates.wire import wire_client

    ddb = client(cfg, "dynamodb")
    writes = cfg.aggregate_writes
    lean = wire_client(ddb)
    sink = AggregatesSink(
        lean, cfg.aggregates, concurrency=writes.concurrency, transaction_rows=writes.transaction_rows
    )
    for table in sorted({a.table for a in sink.aggregates}):
        ensure_table(ddb, table, create=provision)
    return sink
